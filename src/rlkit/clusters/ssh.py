"""Running commands on cluster hosts over SSH, with their host keys checked.

Every connection runs with ``StrictHostKeyChecking=yes`` against the user's
``~/.ssh/known_hosts`` and rlkit's own ``$RLKIT_HOME/known_hosts``. A host
in neither is trusted on first use: its key is fetched once with
``ssh-keyscan``, recorded in rlkit's file, and its fingerprint shown; from
then on a different key is refused, naming the host and the file to fix.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rlkit import paths
from rlkit.clusters import locks
from rlkit.files import atomic_write
from rlkit.errors import BadInputError, WorkFailedError

USER_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
_OFFENDING = re.compile(r"Offending \S+ key in (\S+):(\d+)")
# Ray runs every node command in a login shell with ~/.bashrc sourced, which
# is where on-prem machines usually put `ray` on PATH (conda, venvs).
_RAY_SHELL = "source ~/.bashrc; export OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore && ({})"

Notice = Callable[[str], None]


class SshLoginError(WorkFailedError):
    """A host does not let rlkit log in over SSH (down, unreachable, wrong key)."""


class HostKeyError(BadInputError):
    """A host's key differs from the one recorded for it: refused."""


def known_hosts_file() -> Path:
    """rlkit's own known_hosts: the keys it trusted on first use."""
    return paths.rlkit_home() / "known_hosts"


def ssh_options(timeout_s: float) -> list[str]:
    """The options of every ssh that rlkit runs: keys checked, never a prompt."""
    files = " ".join(shlex.quote(str(p)) for p in (USER_KNOWN_HOSTS, known_hosts_file()))
    return [
        "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={files}",
        "-o", "LogLevel=ERROR",
        "-o", f"ConnectTimeout={max(1, int(timeout_s))}",
    ]  # fmt: skip


@dataclass(frozen=True)
class SshLogin:
    user: str
    key: Path

    def argv(self, host: str, timeout_s: float, *extra: str) -> list[str]:
        """``ssh`` to ``host`` as this login; ``extra`` goes before the destination."""
        return ["ssh", "-i", str(self.key), *ssh_options(timeout_s), *extra, f"{self.user}@{host}"]

    def run(
        self, host: str, command: str, timeout_s: float, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` on ``host`` (``stdin`` fed to it); a timeout is
        returned as exit status 255; a changed host key raises ``HostKeyError``."""
        argv = [*self.argv(host, min(timeout_s, 10.0)), command]
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout_s + 5, check=False,
                input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, 255, "", f"no answer within {timeout_s:.0f}s")
        check_host_key(host, proc.stderr)
        return proc

    def run_all(
        self, commands: dict[str, str], timeout_s: float, stdin: str | None = None
    ) -> dict[str, subprocess.CompletedProcess[str]]:
        """Run one command per host, all hosts at once."""
        with ThreadPoolExecutor(max_workers=max(1, min(16, len(commands)))) as pool:
            futures = {host: pool.submit(self.run, host, cmd, timeout_s, stdin) for host, cmd in commands.items()}
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


def check_host_key(host: str, stderr: str) -> None:
    """Raise ``HostKeyError`` when ssh refused ``host`` for its key."""
    if "Host key verification failed" not in stderr:
        return
    offending = _OFFENDING.search(stderr)
    if offending:
        where, line = offending.groups()
        raise HostKeyError(
            f"the host key of {host} differs from the one recorded in {where} (line {line}): refused",
            f"if {host} was reinstalled, `ssh-keygen -R {host} -f {where}`, then launch again",
        )
    raise HostKeyError(f"the host key of {host} could not be verified: refused", f"check {known_hosts_file()}")


def trust_on_first_use(hosts: list[str], notice: Notice, timeout_s: float) -> None:
    """Record the keys of the hosts that neither known_hosts file knows,
    showing each new fingerprint once; known hosts are left to ssh's check."""
    with locks.hold("known-hosts", 30.0, f"another rlkit is writing {known_hosts_file()}"):
        new = [h for h in hosts if not _is_known(h)]
        if not new:
            return
        scan = subprocess.run(
            ["ssh-keyscan", "-T", str(max(1, int(timeout_s))), *new],
            capture_output=True, text=True, timeout=timeout_s * len(new) + 5, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        lines = [ln for ln in scan.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
        scanned = {ln.split()[0] for ln in lines}
        missing = [h for h in new if h not in scanned]
        if missing:
            raise SshLoginError(
                f"cannot fetch the SSH host key of {', '.join(missing)} within {timeout_s:.0f}s",
                "check the address and that sshd runs there",
            )
        path = paths.private_dir(known_hosts_file().parent) / known_hosts_file().name
        recorded = path.read_text(encoding="utf-8") if path.is_file() else ""
        atomic_write(path, recorded + "\n".join(lines) + "\n", mode=0o600)
        for host in new:
            notice(f"{host}: first contact, host key recorded in {path}: {_fingerprints(host, lines)}")


def _is_known(host: str) -> bool:
    for path in (USER_KNOWN_HOSTS.expanduser(), known_hosts_file()):
        if path.is_file():
            found = subprocess.run(["ssh-keygen", "-F", host, "-f", str(path)], capture_output=True, check=False)
            if found.returncode == 0:
                return True
    return False


def _fingerprints(host: str, lines: list[str]) -> str:
    """``ED25519 SHA256:...`` for each key of ``host``, as ssh shows them."""
    keys = "\n".join(ln for ln in lines if ln.split()[0] == host) + "\n"
    listed = subprocess.run(["ssh-keygen", "-l", "-f", "-"], input=keys, capture_output=True, text=True, check=False)
    # Each line: "256 SHA256:abc... 10.0.0.5 (ED25519)".
    shown = [f"{ln.split()[-1].strip('()')} {ln.split()[1]}" for ln in listed.stdout.splitlines() if ln.strip()]
    return ", ".join(shown)


def in_ray_shell(command: str) -> str:
    """``command`` wrapped the way Ray's launcher runs node commands."""
    return "bash --login -c -i " + shlex.quote(_RAY_SHELL.format(command))


def failure_line(proc: subprocess.CompletedProcess[str]) -> str:
    # `bash -i` without a terminal complains about job control: noise.
    noise = ("job control", "terminal process group")
    text = proc.stderr + "\n" + proc.stdout
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not any(n in ln for n in noise)]
    errors = [ln for ln in lines if ln.startswith("Error")]
    return (errors or lines or [f"exit status {proc.returncode}"])[-1]
