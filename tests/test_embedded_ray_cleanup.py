"""``rlkit train`` on embedded Ray that dies without cleaning up (SIGKILL):
none of its Ray processes outlives it by more than a few seconds."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CONFIGS
from tests.test_train_cli import RLKIT, ray_tmpdir, run_env  # noqa: F401  (ray_tmpdir: a fixture)

pytestmark = pytest.mark.timeout(240)


def _train(tmp_path: Path, tmpdir: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [RLKIT, "train", str(CONFIGS / "ppo_cartpole.yaml"), "--quiet", "--set", f"runs_dir={tmp_path}",
         "--set", "stop.total_steps=10000000", "--set", "stop.target_return=null"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=run_env(tmpdir), start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def _ray_processes(tmpdir: str) -> dict[int, bytes]:
    """{pid: command line} of the run's Ray processes: those that name its
    Ray temp root, and their descendants (agents and workers rename
    themselves over their command line and environment: only their parents
    tell)."""
    parents, cmdlines = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdlines[int(entry.name)] = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] != "Z":
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
    found = {pid for pid in parents if tmpdir.encode() in cmdlines.get(pid, b"")}
    while True:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        if not more:
            return {pid: cmdlines[pid] for pid in found}
        found |= more


def _survivors(before: dict[int, bytes]) -> list[bytes]:
    """The command lines of ``before`` that still run (a pid reused since runs another command line)."""
    alive = []
    for pid, cmdline in before.items():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            if Path(f"/proc/{pid}/cmdline").read_bytes() == cmdline and stat[stat.rindex(")") + 2] != "Z":
                alive.append(cmdline)
        except OSError:
            continue
    return alive


@pytest.fixture
def driver(tmp_path: Path, ray_tmpdir: str) -> Iterator[tuple[subprocess.Popen[str], str]]:  # noqa: F811
    proc = _train(tmp_path, ray_tmpdir)
    try:
        yield proc, ray_tmpdir
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_sigkill_of_the_driver_takes_its_ray_processes_down(driver: tuple[subprocess.Popen[str], str]) -> None:
    proc, tmpdir = driver
    assert _wait_for(lambda: any(b"ray::DashboardAgent" in c for c in _ray_processes(tmpdir).values()), 120), \
        "Ray's agents never started"
    before = _ray_processes(tmpdir)
    proc.kill()
    proc.wait()
    assert _wait_for(lambda: not _survivors(before), 10), [c[:120] for c in _survivors(before)]

