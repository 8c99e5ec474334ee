"""``rlkit eval`` of multi-agent runs: per-policy and team returns, and games against an opponent.

The checkpoints are untrained (a fresh learner's), written as the trainer writes them,
so these tests take seconds and still load, run and report exactly what a trained run would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from rlkit.cli import main
from rlkit.config import TrainConfig
from rlkit.train import checkpoint as ckpt
from rlkit.train.agents import build_mapping
from rlkit.train.envs import probe
from rlkit.train.evaluate import GameEvalResult, MultiAgentEvalResult, evaluate
from rlkit.train.learner import Learner
from rlkit.train.selfplay import OpponentPool
from tests.cli_helpers import run_rlkit

SPREAD = "mpe2:simple_spread_v3"
TICTACTOE = "pettingzoo.classic:tictactoe_v3"


def untrained_run(tmp_path: Path, env_id: str, **multiagent: Any) -> Path:
    """A run directory with one checkpoint of a fresh learner, in the trainer's layout."""
    config = TrainConfig.model_validate({"name": env_id.split(":")[-1], "runs_dir": str(tmp_path),
                                         "env": {"id": env_id}, "multiagent": multiagent or None})
    mapping = build_mapping(config, probe(config.env, config.algo.name))
    learner = Learner(config, mapping, torch.device("cpu"))
    trainer: dict[str, Any] = {"learner": learner.state_dict(), "global_step": 0, "episodes": 0, "dropped": 0,
                               "recent_returns": [], "elapsed": 0.0}
    if mapping.self_play:
        pool = OpponentPool(config.multiagent.self_play)
        pool.admit(learner.publish().policies[next(iter(mapping.policies))], 0)
        trainer["pool"] = pool.state_dict()
    run_dir = ckpt.new_run_dir(config)
    ckpt.save_checkpoint(run_dir, 0, {"trainer": trainer, "config": config.model_dump(mode="json")}, 1, [])
    return run_dir


def cli_text(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """What ``rlkit ARGS`` printed, run in this process, with rich's line wrapping undone."""
    assert main(list(args)) == 0
    return " ".join(capsys.readouterr().out.split())


def test_eval_of_a_simple_spread_run_reports_each_policy_and_the_team(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = untrained_run(tmp_path, SPREAD, mode="shared")
    done = run_rlkit("eval", str(run_dir), "--episodes", "3", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["episodes"] == 3 and result["mean_length"] == 25.0  # simple_spread's max_cycles
    assert list(result["policy_returns"]) == ["agent"]
    # Three agents on one policy: the team return is three times their mean.
    assert result["team_return"] == pytest.approx(3 * result["policy_returns"]["agent"])
    assert result["team_return"] < 0  # distances to landmarks are penalties
    text = cli_text(capsys, "eval", str(run_dir), "--episodes", "3")
    assert "3 episodes: team return" in text and "per policy: agent" in text


def test_independent_policies_over_unlike_spaces_each_get_a_return(tmp_path: Path) -> None:
    result = evaluate(untrained_run(tmp_path, "mpe2:simple_adversary_v3", mode="independent"), episodes=2)
    assert isinstance(result, MultiAgentEvalResult)
    assert list(result.policy_returns) == ["adversary_0", "agent_0", "agent_1"]
    assert result.team_return == pytest.approx(sum(result.policy_returns.values()))


def test_eval_of_a_tictactoe_self_play_run_against_random(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = untrained_run(tmp_path, TICTACTOE, mode="self_play")
    result = json.loads(cli_text(capsys, "eval", str(run_dir), "--opponent", "random", "-n", "40", "--json"))
    assert result["opponent"] == "random" and result["games_per_seat"] == 40
    for seat in ("first", "second"):
        rates = result[seat]
        assert rates["games"] == 40 and rates["win"] + rates["draw"] + rates["loss"] == pytest.approx(1.0)
    text = cli_text(capsys, "eval", str(run_dir), "-n", "40")  # random is the default opponent
    assert "vs random, 40 games per seat: as first: win" in text and "as second: win" in text


def test_a_run_of_the_same_game_is_an_opponent(tmp_path: Path) -> None:
    run_dir = untrained_run(tmp_path, TICTACTOE, mode="self_play")
    other = untrained_run(tmp_path, TICTACTOE, mode="shared", agent_onehot=True)
    result = evaluate(run_dir, episodes=5, opponent=str(other))
    assert isinstance(result, GameEvalResult) and result.opponent == str(ckpt.checkpoints(other)[-1])
    # Both greedy, so every game of one seat is the same game.
    for rates in (result.first, result.second):
        assert sorted((rates.win, rates.draw, rates.loss)) == [0.0, 0.0, 1.0]


def test_a_single_agent_run_keeps_its_result_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = untrained_run(tmp_path, "CartPole-v1")
    result = json.loads(cli_text(capsys, "eval", str(run_dir), "-n", "2", "--json"))
    assert list(result) == ["checkpoint", "episodes", "mean_return", "std_return", "mean_length"]
    assert result["episodes"] == 2 and result["mean_return"] == result["mean_length"]  # CartPole pays 1 a step
    line = cli_error(capsys, "eval", str(run_dir), "--opponent", "random")
    assert "--opponent: CartPole-v1 is not a two-seat game" in line


def cli_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(list(args))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def test_bad_opponents_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    game = untrained_run(tmp_path, TICTACTOE, mode="self_play")
    spread = untrained_run(tmp_path, SPREAD)
    line = cli_error(capsys, "eval", str(game), "--opponent", str(tmp_path / "nowhere"))
    assert "--opponent" in line and "no such run directory or checkpoint file" in line
    line = cli_error(capsys, "eval", str(game), "--opponent", str(spread))
    assert f"its run plays {SPREAD}, not {TICTACTOE}" in line
    line = cli_error(capsys, "eval", str(spread), "--opponent", "random")
    assert f"--opponent: {SPREAD} is not a two-seat game" in line
