"""Self-play's opponent pool and game matches, on real PettingZoo classic games."""

from __future__ import annotations

import io
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from rlkit.config import ModelConfig, SelfPlayConfig, TrainConfig
from rlkit.train import pettingzoo_env as pz
from rlkit.train.agents import build_mapping
from rlkit.train.envs import probe
from rlkit.train.games import Player, play_match, policy_player, random_player, random_rates
from rlkit.train.normalize import RunningMeanStd
from rlkit.train.policies import NumpyPolicy, PolicyCopy
from rlkit.train.selfplay import OpponentPool, Outcome, draw_opponent, outcome_of
from rlkit.train.torch_model import ActorCritic

TICTACTOE = "pettingzoo.classic:tictactoe_v3"
CONNECT_FOUR = "pettingzoo.classic:connect_four_v3"
WIN, DRAW, LOSS = Outcome(0, 0, 1), Outcome(0, 1, 0), Outcome(0, 0, -1)


def copy_of(version: int, obs_norm: RunningMeanStd | None = None) -> PolicyCopy:
    rng = np.random.default_rng(version)
    return PolicyCopy(version, {"actor.0.weight": rng.standard_normal((3, 4)).astype(np.float32),
                                "actor.0.bias": rng.standard_normal(3).astype(np.float32)}, obs_norm)


# --- the pool ---------------------------------------------------------------------------------------

def test_outcome_is_the_sign_of_the_return_difference() -> None:
    assert [outcome_of(1.0, -1.0), outcome_of(0.0, 0.0), outcome_of(-1.0, 1.0), outcome_of(0.5, 0.25)] == [1, 0, -1, 1]


def test_win_rate_admits_only_once_the_window_is_full_and_over_the_last_window_games() -> None:
    pool = OpponentPool(SelfPlayConfig(window=4, win_rate=0.75, snapshot_every=0))
    pool.admit(copy_of(0), 0)
    pool.record([WIN] * 3)
    # Three wins of three, but the window holds four games.
    assert not pool.maybe_admit(1, lambda: copy_of(1))
    pool.record([WIN])
    assert pool.maybe_admit(2, lambda: copy_of(2))
    assert list(pool.snapshots) == [0, 2] and pool.snapshots[2].version == 2
    # Rates start again against the new pool.
    assert pool.metrics() == {"selfplay/pool_size": 2.0, "selfplay/window_games": 0.0}
    pool.record([WIN, WIN, LOSS, DRAW])
    assert not pool.maybe_admit(3, lambda: copy_of(3))
    pool.record([WIN, WIN])  # window: loss, draw, win, win
    assert not pool.maybe_admit(4, lambda: copy_of(4))
    pool.record([WIN])  # window: draw, win, win, win
    assert pool.metrics() == {"selfplay/win_rate": 0.75, "selfplay/draw_rate": 0.25, "selfplay/loss_rate": 0.0,
                              "selfplay/pool_size": 2.0, "selfplay/window_games": 4.0}
    assert pool.maybe_admit(5, lambda: copy_of(5))
    assert list(pool.snapshots) == [0, 2, 5]


@pytest.mark.parametrize(("keep_first", "left"), [(False, [6, 9]), (True, [0, 6, 9])])
def test_snapshot_every_k_updates_and_the_oldest_leaves_a_full_pool(keep_first: bool, left: list[int]) -> None:
    pool = OpponentPool(SelfPlayConfig(pool_size=len(left), win_rate=None, snapshot_every=3, window=2,
                                       keep_first=keep_first))
    pool.admit(copy_of(0), 0)
    admitted = []
    for updates in range(1, 10):
        pool.record([LOSS])  # never winning: only the clock admits
        if pool.maybe_admit(updates, lambda: copy_of(updates)):
            admitted.append(updates)
    assert admitted == [3, 6, 9]
    # With keep_first the untrained policy stays and the next oldest leaves.
    assert list(pool.snapshots) == left
    with pytest.raises(ValueError, match="already in the pool"):
        pool.admit(copy_of(9), 9)


def test_metrics_over_the_window() -> None:
    pool = OpponentPool(SelfPlayConfig(window=4))
    pool.admit(copy_of(0), 0)
    pool.record([WIN, DRAW, LOSS, LOSS, WIN, DRAW, LOSS, LOSS])
    assert pool.metrics() == {"selfplay/win_rate": 0.25, "selfplay/draw_rate": 0.25, "selfplay/loss_rate": 0.5,
                              "selfplay/pool_size": 1.0, "selfplay/window_games": 4.0}


def frequencies(ids: list[int], cfg: SelfPlayConfig, seed: int, draws: int) -> dict[int, float]:
    rng = np.random.default_rng(seed)
    counts = Counter(draw_opponent(ids, cfg, rng) for _ in range(draws))
    return {i: counts[i] / draws for i in ids}


def test_draw_opponent_uniform_and_recent() -> None:
    ids = [10, 20, 30]
    uniform = frequencies(ids, SelfPlayConfig(sampling="uniform"), 1, 20_000)
    assert all(abs(f - 1 / 3) < 0.015 for f in uniform.values()), uniform
    # decay 0.5 over three snapshots: weights 0.25, 0.5, 1 -> 1/7, 2/7, 4/7.
    recent = frequencies(ids, SelfPlayConfig(sampling="recent", recent_decay=0.5), 1, 20_000)
    for i, expected in zip(ids, (1 / 7, 2 / 7, 4 / 7)):
        assert abs(recent[i] - expected) < 0.015, recent
    cfg = SelfPlayConfig(sampling="recent")
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    assert [draw_opponent(ids, cfg, a) for _ in range(50)] == [draw_opponent(ids, cfg, b) for _ in range(50)]
    assert {draw_opponent([4], cfg, a) for _ in range(10)} == {4}


def test_state_dict_round_trip_through_weights_only_load() -> None:
    cfg = SelfPlayConfig(window=3, pool_size=5)
    pool = OpponentPool(cfg)
    rms = RunningMeanStd(np.array([0.5, -1.0, 2.0, 0.0]), np.array([1.0, 2.0, 0.5, 3.0]), 17.0)
    pool.admit(copy_of(0), 0)
    pool.admit(copy_of(4, rms), 4)
    pool.record([Outcome(0, 1, 1), Outcome(4, 0, -1)])
    buffer = io.BytesIO()
    torch.save(pool.state_dict(), buffer)
    buffer.seek(0)
    restored = OpponentPool(cfg)
    restored.load_state_dict(torch.load(buffer, weights_only=True))

    assert list(restored.snapshots) == [0, 4]
    for sid, original in pool.snapshots.items():
        copy = restored.snapshots[sid]
        assert copy.version == original.version and copy.weights.keys() == original.weights.keys()
        for key, value in original.weights.items():
            assert copy.weights[key].dtype == np.float32 and np.array_equal(copy.weights[key], value)
    assert restored.snapshots[0].obs_norm is None
    norm = restored.snapshots[4].obs_norm
    assert norm is not None and np.array_equal(norm.mean, rms.mean) and np.array_equal(norm.var, rms.var)
    assert norm.count == 17.0
    assert restored.metrics() == pool.metrics()
    # The restored window goes on where the saved one stopped: one more win fills it.
    for p in (pool, restored):
        p.record([Outcome(4, 1, 1)])
    assert restored.metrics() == pool.metrics() and restored.metrics()["selfplay/window_games"] == 3.0


def test_rollout_side_modules_keep_torch_out() -> None:
    code = "import sys, rlkit.train.selfplay, rlkit.train.games; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# --- games ------------------------------------------------------------------------------------------

def test_random_against_random_tictactoe_has_the_first_move_advantage() -> None:
    factory = pz.env_factory(pz.resolve(TICTACTOE))
    result = play_match(factory, random_player(np.random.default_rng(1)), random_player(np.random.default_rng(2)),
                        games_per_seat=300, seed=5)
    for seat in (result.first, result.second):
        assert seat.games == 300
        assert seat.win + seat.draw + seat.loss == pytest.approx(1.0)
    # Random play: the first player wins about 58% of games, the second about 29%.
    assert result.first.win > result.second.win + 0.15
    assert result.first.win > result.first.loss and result.second.loss > result.second.win
    assert random_rates(result) == {
        "selfplay/random_first_win": result.first.win, "selfplay/random_first_loss": result.first.loss,
        "selfplay/random_second_win": result.second.win, "selfplay/random_second_loss": result.second.loss,
    }
    again = play_match(factory, random_player(np.random.default_rng(1)), random_player(np.random.default_rng(2)),
                       games_per_seat=300, seed=5)
    assert again == result


def untrained_player(env_id: str, seed: int) -> Player:
    config = TrainConfig.model_validate({"env": {"id": env_id}, "multiagent": {"mode": "self_play"}})
    mapping = build_mapping(config, probe(config.env, "ppo"))
    [(pid, spec)] = mapping.policies.items()
    torch.manual_seed(seed)
    # Gain 1 on the last layer, so the untrained policy has firm (and often illegal) favourites.
    model = ActorCritic(spec, config.model, critic=False)
    torch.nn.init.orthogonal_(model.actor[-1].weight, 1.0)
    policy = NumpyPolicy(spec, config.model, critic=False)
    policy.load(model.numpy_weights())
    return policy_player(mapping, pid, policy, None, config.env.clip_obs)


# 3,000 games in all; connect_four's are the longer ones.
@pytest.mark.parametrize(("env_id", "games_per_seat"), [(TICTACTOE, 1000), (CONNECT_FOUR, 500)])
def test_a_masked_policy_player_never_plays_an_illegal_move(env_id: str, games_per_seat: int) -> None:
    factory = pz.env_factory(pz.resolve(env_id))
    player = untrained_player(env_id, seed=3)
    # play_match raises on an illegal move; pettingzoo alone would only end the game as a loss.
    result = play_match(factory, player, random_player(np.random.default_rng(0)), games_per_seat, seed=0)
    assert result.first.games == result.second.games == games_per_seat
    # The same policy blind to the mask soon picks an occupied square or a full column, and is caught.
    blind = lambda obs, _mask, seat: player(obs, None, seat)  # noqa: E731
    with pytest.raises(RuntimeError, match="illegal action"):
        play_match(factory, blind, random_player(np.random.default_rng(0)), games_per_seat, seed=0)


def test_policy_player_sees_its_seat_as_the_one_hot_slot() -> None:
    # A linear policy that reads only the one-hot seat: seat 0 -> action 2, seat 1 -> action 7.
    config = TrainConfig.model_validate({"env": {"id": TICTACTOE}, "model": {"hidden_sizes": []},
                                         "multiagent": {"mode": "self_play", "agent_onehot": True}})
    mapping = build_mapping(config, probe(config.env, "ppo"))
    [(pid, spec)] = mapping.policies.items()
    assert spec.obs_dim == 18 + 2
    weight = np.zeros((9, 20), np.float32)
    weight[2, 18] = weight[7, 19] = 1.0
    policy = NumpyPolicy(spec, ModelConfig(hidden_sizes=[]), critic=False)
    policy.load({"actor.0.weight": weight, "actor.0.bias": np.zeros(9, np.float32)})
    play = policy_player(mapping, pid, policy, None, config.env.clip_obs)
    board = {"observation": np.zeros((3, 3, 2), np.int8), "action_mask": np.ones(9, np.int8)}
    assert [play(board, np.ones(9, bool), seat) for seat in (0, 1)] == [2, 7]
    # Masked: the favourite is taken, so the best legal action (the first of the ties) is played.
    mask = np.ones(9, bool)
    mask[7] = False
    assert play(board, mask, 1) == 0
    # Normalised after the one-hot is appended, as the actors do: a mean of 1 on seat 0's column zeroes it.
    rms = RunningMeanStd(np.zeros(20), np.ones(20), 10.0)
    rms.mean[18] = 1.0
    normalized = policy_player(mapping, pid, policy, rms, config.env.clip_obs)
    assert [normalized(board, np.ones(9, bool), seat) for seat in (0, 1)] == [0, 7]
