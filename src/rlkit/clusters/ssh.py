"""Running one command on cluster hosts over SSH, the way Ray's launcher does."""

from __future__ import annotations

import os
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rlkit.errors import WorkFailedError

# The options Ray's cluster launcher uses too: nodes are addressed by IP and
# may be rebuilt, so host keys are not pinned; never prompt.
_OPTIONS = (
    "-o", "BatchMode=yes",
    "-o", "IdentitiesOnly=yes",
    "-o", "StrictHostKeyChecking=no",
    "-o", f"UserKnownHostsFile={os.devnull}",
    "-o", "LogLevel=ERROR",
)  # fmt: skip
# Ray runs every node command in a login shell with ~/.bashrc sourced, which
# is where on-prem machines usually put `ray` on PATH (conda, venvs).
_RAY_SHELL = "source ~/.bashrc; export OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore && ({})"


class SshLoginError(WorkFailedError):
    """A host does not let rlkit log in over SSH (down, unreachable, wrong key)."""


@dataclass(frozen=True)
class SshLogin:
    user: str
    key: Path

    def run(self, host: str, command: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
        """Run ``command`` on ``host``; a timeout is returned as exit status 255."""
        argv = [
            "ssh", "-i", str(self.key), *_OPTIONS, "-o", f"ConnectTimeout={max(1, int(timeout_s))}",
            f"{self.user}@{host}", command,
        ]  # fmt: skip
        try:
            return subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout_s + 5, stdin=subprocess.DEVNULL, check=False
            )
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, 255, "", f"no answer within {timeout_s:.0f}s")

    def run_all(self, commands: dict[str, str], timeout_s: float) -> dict[str, subprocess.CompletedProcess[str]]:
        """Run one command per host, all hosts at once."""
        with ThreadPoolExecutor(max_workers=max(1, min(16, len(commands)))) as pool:
            futures = {host: pool.submit(self.run, host, cmd, timeout_s) for host, cmd in commands.items()}
            return {host: future.result() for host, future in futures.items()}

    def check(self, hosts: list[str], timeout_s: float) -> None:
        """Log in to every host once; raise SshLoginError naming the first that fails."""
        failed = [(h, p) for h, p in self.run_all({h: "true" for h in hosts}, timeout_s).items() if p.returncode]
        if failed:
            host, proc = failed[0]
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            raise SshLoginError(
                f"cannot log in to {self.user}@{host} over SSH within {timeout_s:.0f}s{more}: {failure_line(proc)}",
                "check the address, that sshd runs there, and the SSH user and key",
            )


def in_ray_shell(command: str) -> str:
    """``command`` wrapped the way Ray's launcher runs node commands."""
    return "bash --login -c -i " + shlex.quote(_RAY_SHELL.format(command))


def failure_line(proc: subprocess.CompletedProcess[str]) -> str:
    # `bash -i` without a terminal complains about job control: noise.
    noise = ("job control", "terminal process group")
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip() and not any(n in ln for n in noise)]
    return lines[-1] if lines else f"exit status {proc.returncode}"
