"""The installed ``rlkit train`` end to end: embedded Ray, JSON summary, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlkit.train.checkpoint import load_latest
from tests.conftest import CONFIGS

RLKIT = str(Path(sys.executable).with_name("rlkit"))


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture
def ray_tmpdir() -> Iterator[str]:
    """A Ray temp root of this test's own, so its Ray processes can be found by command line."""
    path = tempfile.mkdtemp(prefix="rlkit-t-", dir="/tmp")
    try:
        yield path
    finally:
        for pid in processes_mentioning(path):
            os.kill(pid, signal.SIGKILL)


def run_env(tmpdir: str) -> dict[str, str]:
    return {**os.environ, "RAY_TMPDIR": tmpdir}


def test_train_json_summary_on_embedded_ray_leaves_no_ray_process(tmp_path: Path, ray_tmpdir: str) -> None:
    spawned = time.monotonic()
    out = subprocess.run(
        [RLKIT, "train", str(CONFIGS / "ppo_cartpole.yaml"), "--json", "--name", "smoke",
         "--set", f"runs_dir={tmp_path}", "--set", "stop.total_steps=4096"],
        capture_output=True, text=True, env=run_env(ray_tmpdir), timeout=180,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["stop_reason"] == "total_steps" and summary["global_step"] >= 4096
    assert summary["device"] == "cpu" and summary["name"] == "smoke"
    # The start-up timeline counts from the process's start, which the kernel
    # stamps in clock ticks (10 ms), and ends before the process does.
    waited = time.monotonic() - spawned
    timeline = summary["timeline"]
    assert 0 < timeline["ray_ready"] <= timeline["first_update"] <= timeline["last_update"] < waited + 0.02
    run_dir = Path(summary["run_dir"])
    assert run_dir.parent == tmp_path and run_dir.name.startswith("smoke-")
    assert Path(summary["checkpoint"]).is_file()
    assert processes_mentioning(ray_tmpdir) == []


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path: Path, ray_tmpdir: str) -> None:
    proc = subprocess.Popen(
        [RLKIT, "train", str(CONFIGS / "ppo_cartpole.yaml"), "--quiet",
         "--set", f"runs_dir={tmp_path}", "--set", "stop.total_steps=10000000", "--set", "stop.target_return=null"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=run_env(ray_tmpdir),
        start_new_session=True,
        # As at a terminal, whatever this runner's own SIGINT disposition is.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        metrics_files: list[Path] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            metrics_files = list(tmp_path.glob("*/metrics.jsonl"))
            if metrics_files and len(metrics_files[0].read_text().splitlines()) >= 5:
                break
            time.sleep(0.5)
        assert metrics_files, "training never started"
        # A terminal's Ctrl-C reaches the whole foreground process group.
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    run_dir = metrics_files[0].parent
    assert f"rlkit train --resume {run_dir}" in " ".join(err.split())
    # Taken at the iteration boundary: the checkpoint is at the last logged step, not past it.
    last_row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert load_latest(run_dir).state["trainer"]["global_step"] == last_row["step"]
    deadline = time.monotonic() + 10
    while processes_mentioning(ray_tmpdir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_mentioning(ray_tmpdir) == []
