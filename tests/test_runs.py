"""``rlkit runs``: the table of real runs (finished, interrupted, killed, running), their curves, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rlkit.config import load_train_config
from rlkit.train.checkpoint import load_latest, load_run_config
from rlkit.train.learner import Learner
from rlkit.train.run import train
from rlkit.train.runs import list_runs
from tests.cli_helpers import RLKIT, one_error_line, run_rlkit
from tests.conftest import CONFIGS
from tests.test_train_cli import processes_mentioning, ray_tmpdir  # noqa: F401  (a fixture)
from tests.test_training import ctrl_c_during_update

CARTPOLE = str(CONFIGS / "ppo_cartpole.yaml")


@dataclass
class Runs:
    root: Path
    first: dict
    """Summaries (rlkit train --json) of the two finished runs; ``second`` was written as
    a submitted job writes, one level down under its submission id."""
    second: dict
    interrupted: Path


def start_training(runs_dir: Path, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [RLKIT, "train", CARTPOLE, "--quiet", "--set", f"runs_dir={runs_dir}", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
        # As at a terminal, whatever this runner's own SIGINT disposition is.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for_rows(proc: subprocess.Popen[str], runs_dir: Path, n: int) -> Path:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"rlkit train exited with {proc.returncode}: {proc.communicate()[1]}")
        found = list(runs_dir.glob("*/metrics.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= n:
            return found[0].parent
        time.sleep(0.3)
    raise AssertionError(f"no run under {runs_dir} logged {n} rows")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """Three real runs, one after another: finished, finished (nested), Ctrl-C'd."""
    base = tmp_path_factory.mktemp("runs")
    # Short: Ray's socket paths under it must fit in 107 characters.
    ray_tmp = tempfile.mkdtemp(prefix="rlkit-t-", dir="/tmp")
    env = {**os.environ, "RLKIT_HOME": str(base / "home"), "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    root = base / "runs"
    summaries = []
    try:
        for name, runs_dir, steps in (("first", root, 4096), ("second", root / "raysubmit_abc", 8192)):
            out = subprocess.run(
                [RLKIT, "train", CARTPOLE, "--json", "--name", name, "--set", f"runs_dir={runs_dir}",
                 "--set", f"stop.total_steps={steps}", "--set", "stop.target_return=null"],
                capture_output=True, text=True, env=env, timeout=180)
            assert out.returncode == 0, out.stderr
            summaries.append(json.loads(out.stdout))
        proc = start_training(root / "cut", "--name", "cut", "--set", "stop.total_steps=10000000",
                              "--set", "stop.target_return=null", env=env)
        try:
            run_dir = wait_for_rows(proc, root / "cut", 3)
            os.killpg(proc.pid, signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode == 130, err
        yield Runs(root, summaries[0], summaries[1], run_dir)
    finally:
        for pid in processes_mentioning(ray_tmp):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def runs_json(*args: str, **kwargs) -> list[dict]:
    result = run_rlkit("runs", *args, "--json", **kwargs)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_table_lists_every_run_newest_first_with_its_status_steps_and_return(runs: Runs) -> None:
    listed = runs_json(str(runs.root))
    first, second = Path(runs.first["run_dir"]), Path(runs.second["run_dir"])
    assert [r["name"] for r in listed] == [f"cut/{runs.interrupted.name}", f"raysubmit_abc/{second.name}", first.name]
    cut, by_second, by_first = listed
    assert [r["status"] for r in listed] == ["interrupted", "finished", "finished"]
    for row, summary in ((by_first, runs.first), (by_second, runs.second)):
        assert row["steps"] == summary["global_step"] and row["updates"] == summary["updates"]
        assert row["rolling_return"] == pytest.approx(summary["rolling_return"])
        # Read a moment before the summary's, when the loop ended.
        assert row["wall_s"] == pytest.approx(summary["wall_s"], abs=0.1) and row["stop_reason"] == "total_steps"
        assert (row["env"], row["algorithm"], row["config_name"]) == ("CartPole-v1", "ppo", summary["name"])
        assert row["host"] == socket.gethostname() and row["checkpoints"] == 1
    # The interrupted run stopped at an iteration boundary: its steps are its checkpoint's and its last row's.
    last_row = json.loads((runs.interrupted / "metrics.jsonl").read_text().splitlines()[-1])
    assert cut["steps"] == last_row["step"] == load_latest(runs.interrupted).state["trainer"]["global_step"]
    assert cut["rolling_return"] == pytest.approx(last_row["charts/rolling_return"])

    # The table shows the same, and rlkit train's default runs directory is the default here too.
    table = run_rlkit("runs", extra_env={"RLKIT_RUNS_DIR": str(runs.root)})
    assert table.returncode == 0, table.stderr
    lines = [line for line in table.stdout.splitlines() if "CartPole-v1" in line]
    assert [line.split()[0] for line in lines] == [r["name"] for r in listed]
    assert [line.split()[3] for line in lines] == ["interrupted", "finished", "finished"]
    assert f"{runs.first['global_step']:,}" in lines[2] and f"{runs.first['rolling_return']:.1f}" in lines[2]


def test_no_runs_yet_is_an_empty_list_not_an_error(tmp_path: Path) -> None:
    empty = run_rlkit("runs", extra_env={"RLKIT_RUNS_DIR": str(tmp_path / "none-yet")})
    assert empty.returncode == 0 and "No runs under" in empty.stdout
    assert runs_json(extra_env={"RLKIT_RUNS_DIR": str(tmp_path / "none-yet")}) == []


def test_a_live_run_is_running_and_a_killed_one_failed(tmp_path: Path, ray_tmpdir: str) -> None:
    env = {**os.environ, "RAY_TMPDIR": ray_tmpdir}
    proc = start_training(tmp_path / "runs", "--set", "stop.total_steps=10000000", "--set", "stop.target_return=null",
                          env=env)
    try:
        wait_for_rows(proc, tmp_path / "runs", 2)
        [live] = runs_json(str(tmp_path / "runs"))
        assert live["status"] == "running" and live["pid"] == proc.pid and live["steps"] > 0
        proc.kill()
        proc.communicate(timeout=30)
        [dead] = runs_json(str(tmp_path / "runs"))
        assert dead["status"] == "failed" and dead["steps"] >= live["steps"]
        assert f"process {proc.pid} ended without recording why" in dead["detail"]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_damaged_files_are_skipped_and_never_read_as_finished(runs: Runs, tmp_path: Path) -> None:
    first = Path(runs.first["run_dir"])
    torn, no_record = tmp_path / "torn", tmp_path / "no-record"
    shutil.copytree(first, torn / first.name)
    shutil.copytree(first, no_record / first.name)
    metrics = torn / first.name / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(lines[:2]) + "{not json\n" + "".join(lines[2:]) + '{"step": 99999999, "upd')
    [row] = runs_json(str(torn))
    # Its end record still says where it stopped; the damaged lines are counted, not read.
    assert row["status"] == "finished" and row["steps"] == runs.first["global_step"] and row["skipped_lines"] == 2
    assert "2 line(s) of metrics.jsonl are not records" in run_rlkit("runs", str(torn)).stdout

    (no_record / first.name / "run.json").write_text('{"format": 1, "end": {"reason": "total_')
    [row] = runs_json(str(no_record))
    assert row["status"] == "unknown" and row["steps"] == runs.first["global_step"]


def test_an_error_and_a_resume_are_recorded(ray_local, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_train_config(CONFIGS / "ppo_cartpole.yaml",
                            [f"runs_dir={tmp_path}", "stop.total_steps=8192", "stop.target_return=null", "name=broken"])
    update = Learner.update

    def fails_at_third(self: Learner, fragments, progress: float) -> dict:
        if self.updates == 2:
            raise RuntimeError("the learner ran out of patience")
        return update(self, fragments, progress)

    with monkeypatch.context() as patch:
        patch.setattr(Learner, "update", fails_at_third)
        with pytest.raises(RuntimeError):
            train(cfg)
    [failed] = list_runs(tmp_path)
    assert failed.status == "failed" and failed.detail == "RuntimeError: the learner ran out of patience"
    assert failed.steps > 0 and failed.updates == 2

    with ctrl_c_during_update(monkeypatch, 4):
        cut = train(cfg.model_copy(update={"name": "resumed"}))
    [_, interrupted] = sorted(list_runs(tmp_path), key=lambda r: r.name)
    assert interrupted.status == "interrupted" and interrupted.steps == cut.global_step
    resumed = train(load_run_config(Path(cut.run_dir)), resume=Path(cut.run_dir))
    [again] = [r for r in list_runs(tmp_path) if r.path == cut.run_dir]
    # One run, resumed: finished now, and still dated from its first start.
    assert again.status == "finished" and again.steps == resumed.global_step and again.started == interrupted.started


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plot_writes_a_png_of_several_runs(runs: Runs, tmp_path: Path) -> None:
    second = Path(runs.second["run_dir"])
    env = {"RLKIT_RUNS_DIR": str(runs.root)}
    both = tmp_path / "curves.png"
    result = run_rlkit("runs", "--plot", "first", f"raysubmit_abc/{second.name}", "-o", str(both), extra_env=env)
    assert result.returncode == 0, result.stderr
    assert png_size(both) == (1280, 480)  # a panel against steps, one against wall time
    one = tmp_path / "steps.png"
    result = run_rlkit("runs", "--plot", runs.first["run_dir"], str(second), "--x", "steps", "-o", str(one))
    assert result.returncode == 0, result.stderr
    assert png_size(one) == (640, 480)


def test_text_plot_draws_each_run_with_its_own_marker(runs: Runs) -> None:
    first, second = Path(runs.first["run_dir"]), Path(runs.second["run_dir"])
    result = run_rlkit("runs", "--plot", str(first), str(second))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "rolling return vs env steps"
    grid = [line.split("│", 1)[1] for line in lines if "│" in line]
    assert len(grid) == 16 and any("*" in row for row in grid) and any("o" in row for row in grid)
    assert f"* {first.name}  (last {runs.first['rolling_return']:.1f})" in result.stdout
    assert f"o {second.name}  (last {runs.second['rolling_return']:.1f})" in result.stdout
    # The x axis spans both runs: it ends at the longer run's last step.
    axis = lines[lines.index(next(line for line in lines if "└" in line)) + 1]
    assert "env steps" in axis and axis.split()[-1] == f"{runs.second['global_step']:,}"

    by_time = run_rlkit("runs", "--plot", str(first), "--x", "time")
    assert by_time.returncode == 0 and "rolling return vs wall time (s)" in by_time.stdout


@pytest.mark.parametrize("args", [
    ["runs", "{tmp}/missing"],
    ["runs", "{tmp}/a-file"],
    ["runs", "{tmp}", "{tmp}"],
    ["runs", "--plot"],
    ["runs", "--plot", "no-such-run"],
    ["runs", "--plot", "{tmp}"],
    ["runs", "--plot", "{first}", "--x", "epochs"],
    ["runs", "--plot", "{first}", "-o", "{tmp}/curves.jpg"],
    ["runs", "--plot", "{first}", "-o", "{tmp}/no-dir/curves.png"],
    ["runs", "--plot", "{first}", "--json"],
    ["runs", "-o", "{tmp}/curves.png"],
])
def test_bad_input_is_one_line_and_exit_2(runs: Runs, tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "a-file").write_text("not a directory\n")
    filled = [a.format(tmp=tmp_path, first=runs.first["run_dir"]) for a in args]
    result = run_rlkit(*filled, extra_env={"RLKIT_RUNS_DIR": str(runs.root)})
    assert result.returncode == 2, (result.stdout, result.stderr)
    one_error_line(result)
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.jpg"))
