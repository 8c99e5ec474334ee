"""The multi-agent rollout loop without Ray: streams per (env, slot), credit, padding, bootstraps."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from rlkit.config import ModelConfig, load_train_config
from rlkit.train import pettingzoo_env as pz
from rlkit.train.agents import AgentMapping
from rlkit.train.envs import PolicySpec
from rlkit.train.multiagent_rollout import MultiAgentCollector
from rlkit.train.normalize import DiscountedReturn
from rlkit.train.policies import NumpyPolicy
from rlkit.train.torch_model import ActorCritic
from tests.conftest import CONFIGS
from tests.test_pettingzoo_env import TinyGame


def test_turn_based_streams_carry_each_seats_moves_right_aligned_with_exact_credit() -> None:
    # Two copies of the hand-written game, six turns each: one whole game (seat_0 and seat_1
    # moving twice) and two turns of the next. Both seats share one policy ("seat", two slots).
    cfg = load_train_config(None, ["rollout.envs_per_worker=2", "rollout.fragment_length=6"])
    spec = PolicySpec((1,), "discrete", 3)
    mapping = replace(AgentMapping.build({"seat_0": spec, "seat_1": spec}, lambda a: "seat"), mode="shared")
    torch.manual_seed(0)
    policy = NumpyPolicy(spec, ModelConfig(), critic=True)
    policy.load(ActorCritic(spec, ModelConfig(), critic=True).numpy_weights())
    multi = pz.describe(pz.PettingZooRef("test:tiny_v0", "test", "tiny_v0", "aec"), TinyGame())
    collector = MultiAgentCollector(cfg, mapping, multi, {"seat": policy}, {"seat": None},
                                    np.random.default_rng(0), seed=0, env_fn=TinyGame)
    got = collector.fragment()
    b = got.batches["seat"]
    assert got.env_steps == 12 and got.episode_returns == [110.0, 110.0]
    assert got.policy_returns == {"seat": [55.0, 55.0]}
    # Columns are (env, slot): 0 = env 0 seat_0, 1 = env 0 seat_1, 2 and 3 the same for env 1.
    assert b["obs"].shape == (3, 4, 1)
    v = lambda o: float(policy.value(np.array([[o]], np.float32))[0])  # noqa: E731
    for seat_0, seat_1 in ((0, 1), (2, 3)):
        # seat_0 completed three moves: at 0 moves made (earning 1 + 2 until its next turn), at 2
        # (3 + 4, the terminal reward included) and the next game's first (1 + 2, completed when its
        # turn came again).
        np.testing.assert_array_equal(b["obs"][:, seat_0, 0], [0, 2, 0])
        np.testing.assert_array_equal(b["rewards"][:, seat_0], [3, 7, 3])
        np.testing.assert_array_equal(b["dones"][:, seat_0], [0, 1, 0])
        np.testing.assert_array_equal(b["valid"][:, seat_0], [1, 1, 1])
        # seat_1 completed two; its third is still open, so its stream is padded at the front
        # with a row that is no transition and cuts the advantage recursion (done).
        np.testing.assert_array_equal(b["obs"][1:, seat_1, 0], [1, 3])
        np.testing.assert_array_equal(b["rewards"][:, seat_1], [0, 50, 40])
        np.testing.assert_array_equal(b["dones"][:, seat_1], [1, 0, 1])
        np.testing.assert_array_equal(b["valid"][:, seat_1], [0, 1, 1])
        # Recorded values are the policy's at each move; each stream's next value is its own next
        # move's: seat_0 is to move at 2 moves made, seat_1's open move was made at 1.
        np.testing.assert_allclose(b["values"][:, seat_0], [v(0), v(2), v(0)], rtol=1e-6)
        np.testing.assert_allclose(b["last_value"][[seat_0, seat_1]], [v(2), v(1)], rtol=1e-6)


def test_each_seats_discounted_return_runs_over_its_own_moves_for_reward_normalisation() -> None:
    # The game of the test above, with gamma 0.5 and reward normalisation.
    cfg = load_train_config(None, ["rollout.envs_per_worker=2", "rollout.fragment_length=6", "algo.gamma=0.5",
                                   "env.normalize_reward=true"])
    spec = PolicySpec((1,), "discrete", 3)
    mapping = replace(AgentMapping.build({"seat_0": spec, "seat_1": spec}, lambda a: "seat"), mode="shared")
    policy = NumpyPolicy(spec, ModelConfig(), critic=True)
    policy.load(ActorCritic(spec, ModelConfig(), critic=True).numpy_weights())
    multi = pz.describe(pz.PettingZooRef("test:tiny_v0", "test", "tiny_v0", "aec"), TinyGame())
    returns = {"seat": DiscountedReturn(0.5, (2, 2))}
    collector = MultiAgentCollector(cfg, mapping, multi, {"seat": policy}, {"seat": None},
                                    np.random.default_rng(0), seed=0, env_fn=TinyGame, returns=returns)
    got = collector.fragment()
    # The batch keeps the game's own rewards; reported returns too.
    np.testing.assert_array_equal(got.batches["seat"]["rewards"][:, 0], [3, 7, 3])
    assert got.episode_returns == [110.0, 110.0]
    # seat_0's moves earned 3, 7 (its last of the game), 3: G = 3, 0.5 * 3 + 7 = 8.5, then 3 in the next game.
    # seat_1's earned 50, 40 (its last): G = 50, 0.5 * 50 + 40 = 65. Its padding row is no move and not counted.
    seen = np.asarray([3, 8.5, 3, 50, 65] * 2)
    moments = returns["seat"].take_moments()
    assert moments is not None and moments.count == 10
    np.testing.assert_allclose(moments.mean, [seen.mean()])      # 25.9
    np.testing.assert_allclose(moments.var, [seen.var()])
    # In progress: seat_0's new game (3); seat_1's game ended, so its G is 0 again.
    np.testing.assert_array_equal(returns["seat"].value, [[3, 0], [3, 0]])


def test_mappo_critic_sees_the_global_state_and_its_state_comes_back_from_a_checkpoint() -> None:
    from rlkit.train.agents import build_mapping
    from rlkit.train.envs import probe
    from rlkit.train.learner import Learner
    from rlkit.train.rollout import RolloutWorker

    cfg = load_train_config(CONFIGS / "mappo_simple_spread.yaml", ["rollout.envs_per_worker=2",
                                                                     "rollout.fragment_length=30"])
    spec = probe(cfg.env, "ppo")
    mapping = build_mapping(cfg, spec)
    # state() of three agents (3 x 18) and the agent's one-hot index.
    assert mapping.critic_dim == 54 + 3 and list(mapping.policies) == ["agent"]
    learner = Learner(cfg, mapping, torch.device("cpu"))
    worker = RolloutWorker(cfg, mapping, learner.algorithm.collection, 0, seed=1, multi=spec.multi)
    published = learner.publish()
    worker.policies["agent"].load(published.policies["agent"].weights)
    assert worker.collector is not None and worker.collector.critic is not None
    worker.collector.critic.load(published.critic.weights)
    frag = worker.sample([None], -1)
    batch = frag.batches["agent"]
    # Each row's critic input: the env's state, then which agent the row is (one-hot).
    assert batch["critic_obs"].shape == (30, 6, 57) and batch["obs"].shape == (30, 6, 18)
    np.testing.assert_array_equal(batch["critic_obs"][:, :, 54:].argmax(-1), np.tile([0, 1, 2, 0, 1, 2], (30, 1)))
    # Values recorded while acting are the central critic's.
    np.testing.assert_allclose(batch["values"][0, 1], worker.collector.critic.value(batch["critic_obs"][0, 1:2])[0],
                               rtol=1e-6)
    metrics = learner.update([frag], 0.0)
    assert "critic/losses/value_loss" in metrics and "agent/losses/value_loss" not in metrics
    restored = Learner(cfg, mapping, torch.device("cpu"))
    restored.load_state_dict(learner.state_dict())
    for key, value in learner.publish().critic.weights.items():
        np.testing.assert_array_equal(restored.publish().critic.weights[key], value)
