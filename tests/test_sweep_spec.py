"""Sweep files: what validates, and one clear line (exit code 2) for what does not. No Ray."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from rlkit.errors import ConfigError
from rlkit.sweep.spec import build_spec, load_sweep
from rlkit.sweep.tuning import trial_count
from tests.cli_helpers import one_error_line, run_rlkit
from tests.conftest import CONFIGS

SWEEPS = CONFIGS / "sweeps"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text.replace("BASE", str(CONFIGS / "ppo_cartpole.yaml")))
    return path


@pytest.mark.parametrize("name", ["ppo_cartpole_asha", "ppo_cartpole_pbt"])
def test_shipped_sweeps_validate_and_dry_run(name: str) -> None:
    result = run_rlkit("sweep", str(SWEEPS / f"{name}.yaml"), "--dry-run", "--json", "--set", "num_samples=3")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["name"] == name and plan["trials"] == 3
    assert plan["bundles"] == [{"CPU": 1.0}, {"CPU": 1.0}]
    assert plan["scheduler"] in ("asha", "pbt")


def test_dry_run_text_names_resources_and_space() -> None:
    result = run_rlkit("sweep", str(SWEEPS / "ppo_cartpole_asha.yaml"), "--dry-run",
                       "--set", "resources.learner_cpus=0", "--set", "base.rollout.num_workers=2")  # the command line wins
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "8 trial(s)" in text and "{} + {CPU: 1} + {CPU: 1}" in text
    assert "algo.lr: {'loguniform': [0.0001, 0.003]}" in text


BAD = [
    ("base: BASE\nschedular: {type: asha}\n", "unknown key schedular (did you mean scheduler?)"),
    ("base: BASE\nspace:\n  algo.lrr: {loguniform: [1.0e-4, 1.0e-2]}\n",
     "space.algo.lrr: algo.lrr is not a key of the base training config (did you mean algo.lr?)"),
    ("base: BASE\nspace:\n  algo.lr: {loguniform: [0.0, 1.0e-2]}\n",
     "space.algo.lr: loguniform: low (0) must be above 0 for a log scale"),
    ("base: BASE\nspace:\n  algo.gamma: {uniform: [0.99, 0.9]}\n",
     "space.algo.gamma: uniform: low (0.99) must be below high (0.9)"),
    ("base: BASE\nspace:\n  algo.gae_lambda: {uniform: [0.5, 1.5]}\n",
     "space.algo.gae_lambda: 1.5 is out of range (algo.gae_lambda: Input should be less than or equal to 1"),
    ("base: BASE\nspace:\n  rollout.num_workers: {choice: [0, 1]}\n",
     "space.rollout.num_workers: 0 is out of range"),
    ("base: BASE\nspace:\n  algo.lr: {logunifrom: [1.0e-4, 1.0e-2]}\n",
     "space.algo.lr: unknown distribution 'logunifrom' (did you mean loguniform?)"),
    ("base: BASE\nspace:\n  algo.clip_coef: {quniform: [0.1, 0.3]}\n",
     "space.algo.clip_coef: quniform takes [low, high, q]"),
    ("base: BASE\nscheduler: {type: pbt, max_t: 10, mutations: {algo.lr: {uniform: [1.0e-4, 1.0e-3]}}}\n",
     "scheduler.max_t belongs to type asha, not pbt"),
    ("base: BASE\nscheduler: {type: pbt, mutations: {model.hidden_sizes: {choice: [[32], [64]]}}}\n",
     "scheduler.mutations.model.hidden_sizes: PBT can only perturb algo.* settings"),
    ("base: BASE\nsearch: {type: grid}\nspace:\n  algo.lr: {choice: [1.0e-3]}\n",
     "search.type grid needs every space entry to be a grid (algo.lr is choice)"),
    ("base: nowhere.yaml\n", "nowhere.yaml: no such file"),
    ("base: BASE\nbase_set: {algo.lr: -1}\n", "algo.lr: Input should be greater than 0"),
    ("base: BASE\nmetric: reward\n", "metric: 'reward' is not a training metric"),
    ("base: BASE\nresources: {learner_cpus: -1}\n", "resources.learner_cpus: Input should be greater than or equal to 0"),
    ("base: BASE\nspace:\n  algo.lr: {uniform: [1.0e-4, .inf]}\n",
     "space.algo.lr: uniform bounds must be finite numbers, got [0.0001, inf]"),
    ("base: BASE\nspace:\n  algo.lr: {loguniform: [1.0e-4, 1" + "0" * 400 + "]}\n",
     "space.algo.lr: loguniform bounds must be finite numbers"),
    ("base: BASE\nspace:\n  algo.lr: {choice: [1.0e-3, .nan]}\n",
     "space.algo.lr: nan is out of range (algo.lr: Input should be a finite number"),
    ("base: BASE\nspace:\n  seed: {randint: [0, 100000000000000000000000000]}\n",
     "space.seed: 100000000000000004764729344 is out of range (seed: Input should be less than or equal to 4294967295"),
    ("base: BASE\nspace:\n  rollout.fragment_length: {qrandint: [64, 1000000000000, 64]}\n",
     "space.rollout.fragment_length: 1000000000000 is out of range"),
    ("base: BASE\nscheduler: {type: asha, max_t: .inf}\n", "scheduler.max_t: Input should be a finite number"),
    ("base: BASE\nresources: {learner_cpus: .inf}\n", "resources.learner_cpus: Input should be a finite number"),
    ("base: BASE\nstop: {target: .nan}\n", "stop.target: Input should be a finite number"),
    ("base: BASE\nsearch: {seed: 12345678901234567890123456}\n", "search.seed: Input should be less than or equal to"),
    ("base: BASE\nnum_samples: 1.0e+12\n", "num_samples: Input should be less than or equal to 100000"),
    ("base: BASE\nbase_set: {algo.lr: .inf}\n", "algo.lr: Input should be a finite number"),
    ("base: BASE\nspace: " + "[" * 5000 + "]" * 5000 + "\n", "s.yaml: nested deeper than Python can parse"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_bad_sweep_file_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_sweep(write(tmp_path, text))
    assert message in str(err.value), str(err.value)


def test_bad_sweep_file_through_the_cli_exits_2_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "base: BASE\nspace:\n  algo.lrr: {loguniform: [1.0e-4, 1.0e-2]}\n")
    result = run_rlkit("sweep", str(path))
    assert result.returncode == 2
    assert "algo.lrr is not a key of the base training config" in one_error_line(result)
    result = run_rlkit("sweep", str(SWEEPS / "ppo_cartpole_asha.yaml"), "--set", "num_samples=0")
    assert result.returncode == 2
    assert "num_samples: Input should be greater than or equal to 1" in one_error_line(result)


def test_set_reaches_the_sweep_and_its_base(tmp_path: Path) -> None:
    spec = load_sweep(SWEEPS / "ppo_cartpole_asha.yaml",
                      ["num_samples=3", "base.stop.total_steps=2048", "resources.rollout_workers=2", "name=x"])
    assert spec.name == "x" and spec.file.num_samples == 3
    config = spec.base_config
    assert config.stop.total_steps == 2048 and config.rollout.num_workers == 2
    assert spec.trial_config({"algo.lr": 0.002}).algo.lr == 0.002


def test_resolved_spec_reloads_to_the_same_sweep(tmp_path: Path) -> None:
    spec = load_sweep(SWEEPS / "ppo_cartpole_pbt.yaml")
    again = build_spec(yaml.safe_load(spec.to_yaml()), "sweep.yaml", tmp_path)
    assert again.base == spec.base and again.file.space == spec.file.space
    assert again.file.scheduler.model_dump() == spec.file.scheduler.model_dump()
    # The rollout shape lives in the base now, where --set base.* may have changed it.
    assert again.file.resources.learner_cpus == spec.file.resources.learner_cpus
    assert again.base_config.rollout == spec.base_config.rollout


def test_grid_entries_multiply_the_trials(tmp_path: Path) -> None:
    spec = load_sweep(write(tmp_path, "base: BASE\nnum_samples: 2\nspace:\n  seed: {grid: [1, 2, 3]}\n"
                                      "  algo.lr: {loguniform: [1.0e-4, 1.0e-2]}\n"))
    assert trial_count(spec) == 6


def test_optuna_without_the_extra_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry makes `import optuna` fail as it does where the extra is not installed.
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ConfigError) as err:
        load_sweep(write(tmp_path, "base: BASE\nsearch: {type: optuna}\nspace:\n  algo.lr: {loguniform: [1.0e-4, 1.0e-2]}\n"))
    assert "search.type optuna needs the optuna package (pip install 'rlkit[optuna]')" in str(err.value)
