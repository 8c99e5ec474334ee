"""``rlkit train`` on embedded Ray that dies without cleaning up (SIGKILL):
none of its Ray processes outlives it by more than a few seconds."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlkit.clusters import procs
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


def _listening_ports(pid: int) -> set[int]:
    """The TCP ports that ``pid`` listens on (its sockets' inodes, matched in /proc/net/tcp{,6})."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


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
    # The head processes a training run has no use for are not started (rlkit.train.session).
    unused = (b"dashboard/dashboard.py", b"autoscaler/_private/monitor.py", b"_private/log_monitor.py")
    assert not [c[:120] for c in before.values() if any(u in c for u in unused)]
    # Its dashboard agent is Ray's minimal one: no HTTP, gRPC or metrics port is opened for it.
    [agent] = [pid for pid, c in before.items() if b"ray::DashboardAgent" in c]
    assert _listening_ports(agent) == set()
    proc.kill()
    proc.wait()
    assert _wait_for(lambda: not _survivors(before), 10), [c[:120] for c in _survivors(before)]



# A driver that starts the reaper and a marked "raylet" (killed with it, as
# Ray's are), lets the reaper read the tree, and then, a moment before it is
# SIGKILLed, gets a child that inherits the raylet's log file and drops the
# marker, as Ray's agents and workers do when they retitle themselves: no
# read of the tree while the driver lived saw it.
_LATE_CHILD_DRIVER = """
import ctypes, os, signal, subprocess, sys, time
from rlkit.clusters import procs, reaper
logs = sys.argv[1]
os.environ[procs.MARKER_ENV] = reaper.start_for_this_process()
die_with_parent = lambda: ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", f"--log_dir={logs}"],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
time.sleep(3 * reaper.SCAN_STARTING_S)
out = open(os.path.join(logs, "raylet.out"), "a")
env = {k: v for k, v in os.environ.items() if k != procs.MARKER_ENV}
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], env=env, pass_fds=[out.fileno()],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(child.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_process_started_just_before_the_driver_dies_is_stopped_too(tmp_path: Path) -> None:
    logs = tmp_path / "session_x" / "logs"
    logs.mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-c", _LATE_CHILD_DRIVER, str(logs)], capture_output=True, text=True,
                          timeout=60)
    child = int(proc.stdout.split()[0])
    ref = procs.process_ref(child)
    try:
        assert _wait_for(lambda: ref is None or not procs.is_running(ref), 10), "the late child outlived its driver"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_a_reader_of_the_logs_is_left_alone(tmp_path: Path) -> None:
    """Someone's ``tail -f`` of a dead cluster's logs is not one of its processes."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "raylet.out").write_text("")
    reader = subprocess.Popen(["tail", "-f", str(logs / "raylet.out")], stdout=subprocess.DEVNULL)
    writer = subprocess.Popen(["sh", "-c", f"exec sleep 600 >> {logs / 'raylet.out'}"])
    try:
        assert _wait_for(lambda: [r.pid for r in procs.find_writers({str(logs)})] == [writer.pid], 10)
    finally:
        for p in (reader, writer):
            p.kill()
            p.wait()
