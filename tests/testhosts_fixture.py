"""SSH test hosts for a test session: network namespaces running sshd,
made by ``scripts/testhosts.py`` and always removed afterwards.

Use it from a test module with ``from tests.testhosts_fixture import testhosts``,
or for every module from tests/conftest.py the same way.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "testhosts.py"
STATE_ROOT = Path("/var/lib/rlkit-testhosts")
EXIT_NO_NAMESPACES = 77
HOSTS = 2


@dataclass(frozen=True)
class SshHost:
    name: str
    ip: str
    netns: str


@dataclass(frozen=True)
class SshHosts:
    """The hosts and how to log in to them (key only, as ``user``)."""

    hosts: tuple[SshHost, ...]
    user: str
    key: Path
    ssh_config: Path
    subnet: str

    def ssh(self, host: SshHost, command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", "-F", str(self.ssh_config), host.name, command],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip

    def machine_ip(self) -> str:
        """This machine's own address on the hosts' bridge: what a host
        reaches this machine at."""
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    def unused_ip(self) -> str:
        """An address on the hosts' subnet where no host answers: traffic to
        it stays on this machine's bridge."""
        return str(list(ipaddress.ip_network(self.subnet).hosts())[-1])


def start_hosts(count: int, state_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "start", str(count), "--state-dir", str(state_dir)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def stop_hosts(state_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "stop", "--state-dir", str(state_dir)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture(scope="session")
def testhosts() -> Iterator[SshHosts]:
    """Two hosts for the session; skipped only where namespaces cannot be made."""
    state_dir = STATE_ROOT / f"pytest-{os.getpid()}"
    started = start_hosts(HOSTS, state_dir)
    try:
        if started.returncode == EXIT_NO_NAMESPACES:
            pytest.skip(f"no SSH test hosts: {started.stderr.strip()}")
        assert started.returncode == 0, f"testhosts.py start failed: {started.stderr.strip()}"
        state = json.loads(started.stdout)
        yield SshHosts(
            hosts=tuple(SshHost(h["name"], h["ip"], h["netns"]) for h in state["hosts"]),
            user=state["user"],
            key=Path(state["key"]),
            ssh_config=Path(state["ssh_config"]),
            subnet=state["subnet"],
        )
    finally:
        if state_dir.exists():
            stopped = stop_hosts(state_dir)
            assert stopped.returncode == 0, f"testhosts.py stop failed: {stopped.stderr.strip()}"
