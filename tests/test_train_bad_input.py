"""Bad training input: one clear line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlkit.cli import main
from tests.conftest import CONFIGS


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err
    return code, err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_missing_file(capsys, tmp_path: Path) -> None:
    code, err = run_cli(capsys, "train", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert "nope.yaml: no such file" in one_line(err)


def test_yaml_syntax_error_names_the_line(capsys, tmp_path: Path) -> None:
    cfg = write(tmp_path, "env:\n  id: CartPole-v1\nalgo: [ppo\nseed: 3\n")
    code, err = run_cli(capsys, "train", str(cfg))
    assert code == 2
    line = one_line(err)
    assert f"{cfg}:4:" in line and "YAML syntax error" in line


def test_unknown_key_suggests_the_closest_valid_key(capsys, tmp_path: Path) -> None:
    cfg = write(tmp_path, "algo:\n  name: ppo\n  learning_rat: 0.001\n")
    code, err = run_cli(capsys, "train", str(cfg))
    assert code == 2
    line = one_line(err)
    assert "unknown key algo.learning_rat" in line
    cfg = write(tmp_path, "rollout:\n  num_worker: 3\n")
    code, err = run_cli(capsys, "train", str(cfg))
    assert "did you mean rollout.num_workers?" in one_line(err)


def test_unknown_override_key_is_reported_like_a_file_key(capsys) -> None:
    code, err = run_cli(capsys, "train", str(CONFIGS / "ppo_cartpole.yaml"), "--set", "algo.gama=0.9")
    assert code == 2
    assert "did you mean algo.gamma?" in one_line(err)


def test_wrong_type_names_key_and_value(capsys, tmp_path: Path) -> None:
    cfg = write(tmp_path, "rollout:\n  num_workers: many\n")
    code, err = run_cli(capsys, "train", str(cfg))
    assert code == 2
    line = one_line(err)
    assert "rollout.num_workers" in line and "'many'" in line


def test_unknown_algorithm_name(capsys, tmp_path: Path) -> None:
    code, err = run_cli(capsys, "train", str(write(tmp_path, "algo:\n  name: dqn\n")))
    assert code == 2
    assert "algo.name must be one of ppo, grpo" in one_line(err)


def test_unknown_environment_lists_close_matches(capsys, tmp_path: Path) -> None:
    code, err = run_cli(capsys, "train", str(write(tmp_path, "env:\n  id: CartPol-v1\n")))
    assert code == 2
    line = one_line(err)
    assert "unknown environment 'CartPol-v1'" in line and "CartPole-v1" in line


def test_grpo_groups_must_fit_the_worker(capsys) -> None:
    code, err = run_cli(capsys, "train", str(CONFIGS / "grpo_cartpole.yaml"), "--set", "rollout.envs_per_worker=6")
    assert code == 2
    assert "multiple of algo.group_size" in one_line(err)


@pytest.mark.parametrize(("config", "setting", "words"), [
    ("grpo_cartpole.yaml", "env.normalize_reward=true", "env.normalize_reward: algo grpo already scales"),
    ("selfplay_tictactoe.yaml", "eval.every_updates=5",
     "eval.every_updates: a self-play run is measured against a random player"),
])
def test_settings_the_algorithm_or_mode_has_its_own_way_for(capsys, config: str, setting: str, words: str) -> None:
    code, err = run_cli(capsys, "train", str(CONFIGS / config), "--set", setting)
    assert code == 2
    assert words in one_line(err)


class _MultiBinaryEnv(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)
    action_space = gym.spaces.MultiBinary(4)


def test_algorithm_that_does_not_fit_the_action_space(capsys, tmp_path: Path) -> None:
    gym.register("RlkitTestMultiBinary-v0", entry_point=_MultiBinaryEnv)
    try:
        code, err = run_cli(capsys, "train", str(write(tmp_path, "env:\n  id: RlkitTestMultiBinary-v0\n")))
    finally:
        del gym.registry["RlkitTestMultiBinary-v0"]
    assert code == 2
    line = one_line(err)
    assert "algo ppo does not fit" in line and "MultiBinary" in line


def test_no_stop_condition(capsys, tmp_path: Path) -> None:
    code, err = run_cli(capsys, "train", str(write(tmp_path, "stop:\n  total_steps: null\n")))
    assert code == 2
    assert "training never ends" in one_line(err)


def test_resume_from_a_directory_that_is_not_a_run(capsys, tmp_path: Path) -> None:
    code, err = run_cli(capsys, "train", "--resume", str(tmp_path))
    assert code == 2
    assert "not a run directory" in one_line(err)


def test_eval_of_a_missing_checkpoint(capsys, tmp_path: Path) -> None:
    code, err = run_cli(capsys, "eval", str(tmp_path / "missing"))
    assert code == 2
    assert "no such run directory or checkpoint" in one_line(err)


def test_the_installed_command_prints_no_traceback_and_debug_does(tmp_path: Path) -> None:
    rlkit = Path(sys.executable).with_name("rlkit")
    cfg = write(tmp_path, "algo:\n  nam: ppo\n")
    plain = subprocess.run([str(rlkit), "train", str(cfg)], capture_output=True, text=True)
    assert plain.returncode == 2
    assert "Traceback" not in plain.stderr and "unknown key algo.nam" in plain.stderr
    debug = subprocess.run([str(rlkit), "--debug", "train", str(cfg)], capture_output=True, text=True)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_help_imports_neither_ray_nor_torch() -> None:
    code = "import sys; from rlkit.cli import app; print('ray' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given when CUDA is missing")
def test_cuda_requested_without_a_gpu(capsys) -> None:
    code, err = run_cli(capsys, "train", str(CONFIGS / "ppo_cartpole.yaml"), "--device", "cuda")
    assert code == 2
    assert "no CUDA device" in one_line(err)


DEEP = "[" * 5000 + "]" * 5000
# Six levels of nine aliases each: 9**6 values once expanded, from a 200-byte file.
LAUGHS = "a0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 6))


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--set", "algo.lr=.inf"], "algo.lr: Input should be a finite number"),
        (["--set", "algo.clip_coef=.nan"], "algo.clip_coef: Input should be a finite number"),
        (["--set", "stop.time_budget_s=.inf"], "stop.time_budget_s: Input should be a finite number"),
        (["--set", "rollout.num_cpus_per_worker=.inf"], "rollout.num_cpus_per_worker: Input should be a finite number"),
        (["--set", "seed=12345678901234567890123456"], "seed: Input should be less than or equal to 4294967295"),
        (["--set", "seed=-1"], "seed: Input should be greater than or equal to 0"),
        (["--set", "rollout.fragment_length=1.0e+12"], "rollout.fragment_length: Input should be less than or equal to"),
        (["--set", "rollout.envs_per_worker=4096", "--set", "rollout.fragment_length=4096"],
         "16,777,216 steps per fragment, above 1,048,576"),
        (["--set", "rollout.num_workers=100000"], "rollout.num_workers: Input should be less than or equal to 1024"),
        (["--set", "stop.total_steps=1.0e+14"], "stop.total_steps: Input should be less than or equal to"),
        (["--set", "model.hidden_sizes=[100000000]"], "model.hidden_sizes.0: Input should be less than or equal to"),
        (["--set", f"env.kwargs.x={DEEP}"], "--set env.kwargs.x: nested deeper than Python can parse"),
        (["--set", "env.kwargs.x=" + "[" * 40 + "]" * 40], "--set env.kwargs.x: nested deeper than 32 levels"),
    ],
)
def test_non_finite_and_absurd_settings_are_refused(capsys, args: list[str], words: str) -> None:
    code, err = run_cli(capsys, "train", str(CONFIGS / "ppo_cartpole.yaml"), *args)
    assert code == 2
    assert words in one_line(err)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (f"env:\n  kwargs: {DEEP}\n", "cfg.yaml: nested deeper than Python can parse"),
        ("env:\n  kwargs:\n    x: " + "{a: " * 40 + "1" + "}" * 40 + "\n", "cfg.yaml: nested deeper than 32 levels"),
        (LAUGHS, "cfg.yaml: more than 100,000 values"),
        ("algo:\n  lr: .nan\n", "algo.lr: Input should be a finite number"),
        ("seed: 12345678901234567890123456\n", "seed: Input should be less than or equal to 4294967295"),
    ],
)
def test_malformed_config_files_are_refused(capsys, tmp_path: Path, text: str, words: str) -> None:
    code, err = run_cli(capsys, "train", str(write(tmp_path, text)))
    assert code == 2
    assert words in one_line(err)


def test_runs_dir_that_is_a_file_is_refused_before_training(capsys, tmp_path: Path) -> None:
    blocker = tmp_path / "runs"
    blocker.write_text("not a directory")
    for runs_dir, words in ((blocker, f"runs_dir: {blocker} is not a directory"),
                            (blocker / "sub", f"runs_dir: {blocker / 'sub'}: {blocker} is not a directory")):
        code, err = run_cli(capsys, "train", str(CONFIGS / "ppo_cartpole.yaml"), "--set", f"runs_dir={runs_dir}")
        assert code == 2
        assert words in one_line(err)
    assert blocker.read_text() == "not a directory"


@pytest.mark.parametrize(("body", "message"), [
    # Unlike spaces on one policy: the adversary sees 8 numbers, the good agents 10.
    ("env: {id: 'mpe2:simple_adversary_v3'}\nmultiagent: {policies: {adversary: team, agent: team}}\n",
     "policy team: agents adversary_0 and agent_0 are of different types or spaces"),
    ("env: {id: 'mpe2:simple_spread_v3'}\nmultiagent: {policies: {agent_7: solo}}\n",
     "multiagent.policies names agent_7, which is neither an agent nor an agent type"),
    ("env: {id: 'mpe2:simple_spread_v3'}\nmultiagent: {mode: self_play}\n",
     "self-play needs a two-player game whose seats are alike"),
    ("env: {id: CartPole-v1}\nmultiagent: {mode: independent}\n",
     "multiagent: env.id CartPole-v1 is a single-agent gymnasium environment"),
    ("env: {id: 'mpe2:simple_spread_v3'}\nmultiagent: {mode: shard}\n",
     "multiagent.mode: Input should be 'shared', 'independent', 'self_play' or 'mappo'"),
    ("env: {id: 'pettingzoo.classic:tictactoe_v3'}\nmultiagent: {mode: self_play, self_play: {win_rate: null}}\n",
     "self_play: set win_rate or snapshot_every"),
    ("env: {id: 'mpe2:simple_spread_v3'}\nalgo: {name: grpo, group_size: 2}\nrollout: {envs_per_worker: 2}\n",
     "algo grpo: trains single-agent environments only"),
])
def test_a_bad_multiagent_config_is_one_line_before_ray_starts(capsys, tmp_path: Path, body: str,
                                                               message: str) -> None:
    code, err = run_cli(capsys, "train", str(write(tmp_path, body)))
    assert code == 2
    assert message in one_line(err)
