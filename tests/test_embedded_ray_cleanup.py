"""``rlkit train`` on embedded Ray that dies without cleaning up (SIGKILL,
or Ctrl-C while Ray starts): none of its Ray processes outlives it by more
than a few seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CONFIGS
from tests.test_train_cli import RLKIT, processes_mentioning, ray_tmpdir, run_env  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(240)

# Ray's agents are the last processes it starts, and the ones that used to
# outlive a killed driver by a minute.
AGENT = b"dashboard/agent.py"


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


def _cmdlines(tmpdir: str) -> list[bytes]:
    found = []
    for pid in processes_mentioning(tmpdir):
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        except OSError:
            continue
    return found


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
    assert _wait_for(lambda: any(AGENT in c for c in _cmdlines(tmpdir)), 120), "Ray's agents never started"
    proc.kill()
    proc.wait()
    assert _wait_for(lambda: not processes_mentioning(tmpdir), 10), [c[:120] for c in _cmdlines(tmpdir)]


def test_ctrl_c_while_ray_starts_leaves_no_ray_process(driver: tuple[subprocess.Popen[str], str]) -> None:
    proc, tmpdir = driver
    # The GCS is up and the raylet's agents are not yet: Ray is starting.
    assert _wait_for(lambda: any(b"gcs_server" in c for c in _cmdlines(tmpdir)), 120), "Ray never started"
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=60)
    assert _wait_for(lambda: not processes_mentioning(tmpdir), 10), [c[:120] for c in _cmdlines(tmpdir)]
