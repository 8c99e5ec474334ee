"""What a rollout actor hands the learner: autoreset rows masked, truncations bootstrapped.

RolloutWorker is a plain class; these tests run it in-process (no Ray) on
CartPole cut to 5-step episodes, which no random policy can fail sooner.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlkit.train.agents import DEFAULT_POLICY, agent_mapping
from rlkit.train.envs import probe
from rlkit.train.learner import Learner
from rlkit.train.rollout import RolloutWorker
from tests.conftest import CONFIGS

EPISODE = 5


def worker_and_learner(vectorization: str, envs: int, length: int, *overrides: str):
    from rlkit.config import load_train_config

    cfg = load_train_config(CONFIGS / "ppo_cartpole.yaml", [
        f"env.vectorization={vectorization}", f"rollout.envs_per_worker={envs}",
        f"rollout.fragment_length={length}", *overrides,
    ])
    cfg.env.kwargs = {"max_episode_steps": EPISODE}
    spec = probe(cfg.env, "ppo")
    learner = Learner(cfg, agent_mapping(spec), torch.device("cpu"))
    worker = RolloutWorker(cfg, learner.mapping, learner.algorithm.collection, worker_index=0, seed=3)
    worker.policies[DEFAULT_POLICY].load(learner.publish().policies[DEFAULT_POLICY].weights)
    worker.version = 0
    return worker, learner


@pytest.mark.parametrize("vectorization", ["auto", "sync"])
def test_autoreset_rows_are_masked_and_truncations_bootstrap_from_the_final_observation(vectorization: str) -> None:
    envs, length = 3, 14
    worker, learner = worker_and_learner(vectorization, envs, length)
    frag = worker.sample([None], 0)
    b = frag.batches[DEFAULT_POLICY]

    # Episodes end (by time limit) at steps 4 and 10; the steps after them are resets.
    expected_valid = np.ones(length)
    expected_valid[[5, 11]] = 0
    expected_dones = np.zeros(length)
    expected_dones[[4, 10]] = 1
    for i in range(envs):
        np.testing.assert_array_equal(b["valid"][:, i], expected_valid)
        np.testing.assert_array_equal(b["dones"][:, i], expected_dones)
    assert frag.env_steps == 12 * envs
    assert frag.episode_lengths == [EPISODE] * (2 * envs)
    assert frag.episode_returns == [float(EPISODE)] * (2 * envs)
    # The truncated step sees V(final observation); the reset row after it ran
    # the policy on that same observation, so its recorded value is that V.
    np.testing.assert_allclose(b["bootstrap"][[4, 10]], b["values"][[5, 11]], rtol=1e-6)
    assert not b["bootstrap"][np.asarray(expected_dones) == 0].any()
    # The learner trains on real transitions only.
    assert len(learner.algorithm.rows(b)["obs"]) == 12 * envs


@pytest.mark.parametrize("vectorization", ["auto", "sync"])
def test_episodes_and_resets_carry_across_fragments(vectorization: str) -> None:
    worker, _ = worker_and_learner(vectorization, envs=2, length=7)
    first = worker.sample([None], 0)
    second = worker.sample([None], 0)
    # Episode 2 starts at step 6 of the first fragment and ends at step 3 of the second.
    assert first.episode_lengths == [EPISODE] * 2
    assert second.episode_lengths == [EPISODE] * 2
    np.testing.assert_array_equal(second.batches[DEFAULT_POLICY]["valid"][:, 0], [1, 1, 1, 1, 0, 1, 1])
    assert first.env_steps + second.env_steps == 2 * (14 - 2)


@pytest.mark.parametrize("vectorization", ["auto", "sync"])
def test_with_normalize_reward_the_learner_trains_on_rewards_over_the_return_std(vectorization: str) -> None:
    envs, length = 3, 14
    worker, learner = worker_and_learner(vectorization, envs, length, "env.normalize_reward=true")
    frag = worker.sample([None], 0)
    b = frag.batches[DEFAULT_POLICY]
    valid = b["valid"] > 0
    # What the actor sends and reports stays the environment's own: CartPole's 1 a step, returns of 5.
    assert (b["rewards"][valid] == 1.0).all()
    assert frag.episode_returns == [float(EPISODE)] * (2 * envs)
    # Each env's G over its 12 real steps (gamma 0.98): an episode of five, another, then two steps.
    g = [1.0]
    for _ in range(EPISODE - 1):
        g.append(0.98 * g[-1] + 1.0)                      # 1, 1.98, 2.9404, 3.881592, 4.80396016
    seen = np.asarray((g + g + g[:2]) * envs)
    stats = frag.return_stats[DEFAULT_POLICY]
    assert stats.count == 12 * envs
    np.testing.assert_allclose(stats.mean, [seen.mean()], rtol=1e-9)
    np.testing.assert_allclose(stats.var, [seen.var()], rtol=1e-9)

    given = []
    rows = learner.algorithm.rows
    learner.algorithm.rows = lambda batch: given.append(batch) or rows(batch)
    learner.update([frag], 0.0)
    # The learner's first scale is this fragment's own (its prior weighs 1e-4 of a sample).
    np.testing.assert_allclose(given[0]["rewards"][valid], 1.0 / seen.std(), rtol=1e-4)

    # A checkpoint round trip keeps the scale, and each env's return in progress (1 and 1.98).
    restored = Learner(learner.cfg, learner.mapping, torch.device("cpu"))
    restored.load_state_dict(learner.state_dict())
    assert restored.policies[DEFAULT_POLICY].ret_rms == learner.policies[DEFAULT_POLICY].ret_rms
    np.testing.assert_allclose(worker.returns[DEFAULT_POLICY].value[:, 0], [g[1]] * envs)
    twin, _ = worker_and_learner(vectorization, envs, length, "env.normalize_reward=true")
    twin.set_state(worker.get_state())
    np.testing.assert_array_equal(twin.returns[DEFAULT_POLICY].value, worker.returns[DEFAULT_POLICY].value)
    assert twin.sample([None], 0).return_stats == worker.sample([None], 0).return_stats
