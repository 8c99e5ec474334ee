"""Sweeps on real Ray Tune: ASHA, PBT, retries, a killed driver resumed, status.

Trials are tiny (CartPole, one rollout worker, a few thousand steps) and two
run at once on a 2-core machine (the learner reserves no CPU here).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlkit.cli import main
from rlkit.sweep import load_sweep, run_sweep
from rlkit.sweep.records import sweep_statuses
from rlkit.sweep.state import read_progress
from tests.cli_helpers import RLKIT, run_rlkit
from tests.conftest import CONFIGS
from tests.test_train_cli import processes_mentioning, ray_tmpdir  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(300)


def sweep_file(tmp_path: Path, **sections: Any) -> Path:
    """A sweep over ppo_cartpole.yaml with small trials; ``sections`` replace or add keys
    (``base_set`` entries are added to the defaults here)."""
    base_set = {
        # 8 envs x 32 steps: 256 steps per iteration, the unit the trials below are sized in.
        "rollout.envs_per_worker": 8,
        # 14 iterations, less the few masked autoreset rows: within max_t below.
        "stop.total_steps": 3584, "stop.target_return": None,
        **sections.pop("base_set", {}),
    }
    data: dict[str, Any] = {
        "name": "t",
        "base": str(CONFIGS / "ppo_cartpole.yaml"),
        "base_set": base_set,
        "resources": {"learner_cpus": 0, "rollout_workers": 1, "cpus_per_worker": 1},
        "storage_path": str(tmp_path / "sweeps"),
        "search": {"type": "random", "seed": 0},
    }
    data.update(sections)
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_asha_stops_weak_trials_early_and_its_best_config_trains(ray_local, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # Two learning rates that learn and two that barely do: at each rung
    # ASHA stops whoever is below the median of those recorded there.
    path = sweep_file(tmp_path, space={"algo.lr": {"grid": [3.0e-3, 2.0e-3, 1.0e-6, 2.0e-6]}},
                      scheduler={"type": "asha", "max_t": 16, "grace_period": 4, "reduction_factor": 2},
                      checkpoint_every=4)
    seen: list[int] = []
    result = run_sweep(load_sweep(path), on_progress=lambda p: seen.append(len(p.trials)))
    assert result.state == "finished", result
    assert len(result.trials) == 4 and all(t.status == "TERMINATED" for t in result.trials)
    early = [t for t in result.trials if t.stopped_early]
    assert early and all(t.iterations < 16 for t in early)
    assert result.best_params["algo.lr"] > 1e-3 and max(seen) == 4
    assert not next(t for t in result.trials if t.trial_id == result.best_trial).stopped_early
    # Every trial is laid out like an rlkit train run, under one TensorBoard root.
    for trial in result.trials:
        trial_dir = Path(trial.path)
        assert trial_dir.parent == Path(result.path)
        assert (trial_dir / "config.yaml").is_file() and list((trial_dir / "tb").glob("events.out.tfevents.*"))
        rows = (trial_dir / "metrics.jsonl").read_text().splitlines()
        assert len(rows) == trial.iterations
    assert result.best_checkpoint and Path(result.best_checkpoint, "checkpoints").is_dir()
    best = yaml.safe_load(Path(result.best_config or "").read_text())
    assert best["algo"]["lr"] == result.best_params["algo.lr"] and "runs_dir" not in best
    assert read_progress(Path(result.path)).state == "finished"  # type: ignore[union-attr]
    [status] = sweep_statuses()
    assert status.state == "finished" and status.trials == {"TERMINATED": 4}
    assert status.best_metric == pytest.approx(result.best_metric)

    code = main(["train", result.best_config or "", "--json", "--set", "stop.total_steps=1024",
                 "--set", f"runs_dir={tmp_path / 'runs'}"])
    trained = json.loads(capsys.readouterr().out)
    assert code == 0 and trained["name"] == "t-best" and trained["global_step"] >= 1024
    assert code == main(["eval", result.best_checkpoint or "", "--episodes", "1"])


def test_pbt_clones_a_better_trial_and_finishes(ray_local, tmp_path: Path) -> None:
    path = sweep_file(
        tmp_path, base_set={"stop.total_steps": 3072, "stop.target_return": None, "algo.anneal_lr": False},
        space={"algo.lr": {"grid": [3.0e-3, 1.0e-6]}},
        # Synchronous PBT: both trials have a score at every perturbation. (Asynchronous
        # PBT compares with unfinished trials only, and a 12-iteration trial can end
        # before the other reports once.)
        scheduler={"type": "pbt", "perturbation_interval": 3, "quantile_fraction": 0.5, "synch": True,
                   "mutations": {"algo.lr": {"loguniform": [1.0e-6, 3.0e-3]}}},
    )
    result = run_sweep(load_sweep(path))
    assert result.state == "finished", result
    assert all(t.status == "TERMINATED" for t in result.trials)
    cloned = [t for t in result.trials if t.cloned_from]
    assert cloned, [t.params for t in result.trials]
    donor = {t.trial_id for t in result.trials} - {cloned[0].trial_id}
    assert set(cloned[0].cloned_from) <= donor
    events = [json.loads(line) for line in Path(cloned[0].path, "events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "cloned" and e["step"] > 0 for e in events)
    # Through the verified loader: the donor's env state is this user's and comes along.
    assert not any("notes" in e for e in events), events
    # A clone continues with a perturbed learning rate, inside the mutation range.
    assert 1e-6 <= cloned[0].params["algo.lr"] <= 3e-3


def test_a_trial_that_raises_is_retried_then_reported(ray_local, tmp_path: Path) -> None:
    path = sweep_file(tmp_path, base_set={"stop.total_steps": 1024, "stop.target_return": None},
                      space={"env.id": {"grid": ["CartPole-v1", "CartPole-v999"]}}, max_failures=1)
    result = run_sweep(load_sweep(path))
    assert result.state == "finished"
    good, bad = sorted(result.trials, key=lambda t: t.params["env.id"])
    assert good.status == "TERMINATED" and good.failures == 0
    assert bad.status == "ERROR" and bad.failures == 2  # the first run and its one retry
    assert bad.error and "CartPole-v999" in bad.error
    assert result.best_trial == good.trial_id


def _wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _finished_in_tune_state(sweep_dir: Path) -> list[str]:
    """Trials that Tune's latest saved experiment state (what a resume starts from) holds as finished."""
    files = sorted(sweep_dir.glob("experiment_state-*.json"))
    if not files:
        return []
    try:
        data = json.loads(files[-1].read_text())
    except ValueError:
        return []
    trials = [json.loads(trial) for trial, _ in data["trial_data"]]
    return [t["trial_id"] for t in trials if t["status"] == "TERMINATED"]


def test_killed_driver_resumes_without_rerunning_finished_trials(tmp_path: Path, ray_tmpdir: str) -> None:  # noqa: F811
    path = sweep_file(tmp_path, num_samples=4, max_concurrent_trials=1,
                      base_set={"stop.total_steps": 2048, "stop.target_return": None},
                      space={"algo.lr": {"loguniform": [3.0e-4, 3.0e-3]}})
    # Tune saves its state every 10 s or more; every second here, so the kill
    # comes while trials are left to run.
    env = {**os.environ, "RAY_TMPDIR": ray_tmpdir, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    driver = subprocess.Popen([RLKIT, "sweep", str(path), "--quiet"], env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        sweep_dir = _wait_for(lambda: next((tmp_path / "sweeps").glob("t-*"), None), 60, "the sweep directory")
        finished = _wait_for(lambda: _finished_in_tune_state(sweep_dir), 150, "a finished trial in Tune's state")
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        for pid in processes_mentioning(ray_tmpdir):
            os.kill(pid, signal.SIGKILL)
    before = {name: (sweep_dir / name / "metrics.jsonl").read_text() for name in finished}
    assert len(finished) < 4
    [status] = sweep_statuses()
    assert status.state == "interrupted"

    result = run_rlkit("sweep", "--resume", str(sweep_dir), "--json", "--quiet", timeout=240,
                       extra_env={"RAY_TMPDIR": ray_tmpdir})
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["state"] == "finished" and summary["counts"] == {"TERMINATED": 4}
    for name, text in before.items():
        # Finished before the kill: not one more training iteration since.
        assert (sweep_dir / name / "metrics.jsonl").read_text() == text
    assert all(t["global_step"] >= 2048 for t in summary["trials"])

    [listed] = sweep_statuses()
    assert listed.state == "finished" and listed.path == str(sweep_dir) and listed.trials == {"TERMINATED": 4}


def test_optuna_search_suggests_every_trial(ray_local, tmp_path: Path) -> None:
    pytest.importorskip("optuna", reason="the optuna extra is not installed")
    path = sweep_file(tmp_path, num_samples=2, max_concurrent_trials=1, search={"type": "optuna", "seed": 1},
                      base_set={"stop.total_steps": 512, "stop.target_return": None},
                      space={"algo.lr": {"loguniform": [1.0e-4, 3.0e-3]}, "algo.update_epochs": {"qrandint": [2, 8, 2]}})
    result = run_sweep(load_sweep(path))
    assert result.state == "finished" and len(result.trials) == 2
    for trial in result.trials:
        assert 1e-4 <= trial.params["algo.lr"] <= 3e-3 and trial.params["algo.update_epochs"] in (2, 4, 6, 8)


def test_reaching_the_sweep_target_ends_the_sweep(ray_local, tmp_path: Path) -> None:
    path = sweep_file(tmp_path, num_samples=3, max_concurrent_trials=1, stop={"target": 5.0},
                      space={"algo.lr": {"loguniform": [3.0e-4, 3.0e-3]}})
    result = run_sweep(load_sweep(path))
    assert result.state == "finished"
    [reached] = [t for t in result.trials if t.iterations]
    assert reached.iterations == 1 and reached.metric is not None and reached.metric >= 5.0
    assert result.best_trial == reached.trial_id
    # The others never trained (Tune may not even have created them).
    assert all(t.global_step == 0 for t in result.trials if t is not reached)
