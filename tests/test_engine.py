"""The engine's parts without Ray: numpy policy against torch model, masks,
the agent-to-policy mapping, a learner of several policies, old checkpoints."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rlkit.cli import main
from rlkit.config import ModelConfig, load_train_config
from rlkit.errors import ConfigError
from rlkit.train.agents import AgentMapping, agent_type
from rlkit.train.envs import SINGLE_AGENT, PolicySpec, probe
from rlkit.train.learner import Learner
from rlkit.train.policies import NumpyPolicy
from rlkit.train.rollout import RolloutWorker
from rlkit.train.torch_model import ActorCritic
from tests.conftest import CONFIGS

ROWS = 512
DISCRETE = PolicySpec((6,), "discrete", 5)
CONTINUOUS = PolicySpec((3, 2), "continuous", 2, (-1.0, -2.0), (1.0, 2.0))


def random_pair(spec: PolicySpec, seed: int) -> tuple[ActorCritic, NumpyPolicy]:
    """A torch model with random weights (not its near-uniform init) and its numpy copy."""
    torch.manual_seed(seed)
    model = ActorCritic(spec, ModelConfig(hidden_sizes=[16, 8]), critic=True)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.7)
    policy = NumpyPolicy(spec, ModelConfig(hidden_sizes=[16, 8]), critic=True)
    policy.load(model.numpy_weights())
    return model, policy


def random_masks(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    masks = rng.random((rows, n)) < 0.5
    masks[np.arange(rows), rng.integers(0, n, rows)] = True  # at least one legal action
    masks[:8] = False
    masks[np.arange(8), np.arange(8) % n] = True  # rows with exactly one legal action
    return masks


@pytest.mark.parametrize("kind", ["discrete", "continuous", "masked"])
def test_numpy_policy_matches_the_torch_model(kind: str) -> None:
    spec = CONTINUOUS if kind == "continuous" else DISCRETE
    model, policy = random_pair(spec, seed=7)
    rng = np.random.default_rng(7)
    obs = rng.standard_normal((ROWS, spec.obs_dim)).astype(np.float32) * 2
    mask = random_masks(rng, ROWS, spec.action_dim) if kind == "masked" else None
    tmask = None if mask is None else torch.as_tensor(mask)

    actions, logp, values = policy.act(obs, rng, mask)
    t_obs = torch.as_tensor(obs)
    with torch.no_grad():
        t_logp, entropy = model.log_prob_entropy(t_obs, torch.as_tensor(actions), tmask)
        t_values = model.value(t_obs)
        out = model.actor(t_obs)
    np.testing.assert_allclose(logp, t_logp.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(values, t_values.numpy(), rtol=1e-5, atol=1e-5)

    greedy = policy.act_deterministic(obs, mask)
    if kind == "continuous":
        np.testing.assert_allclose(greedy, out.numpy(), rtol=1e-5, atol=1e-5)
        return
    logits = out if tmask is None else out.masked_fill(~tmask, -torch.inf)
    np.testing.assert_array_equal(greedy, logits.argmax(-1).numpy())
    # The draws cover the choices: the sampler is not stuck on a few actions.
    assert len(set(actions.tolist())) == spec.action_dim
    if mask is None:
        return
    # Illegal actions are never drawn, nor chosen greedily.
    assert mask[np.arange(ROWS), actions].all() and mask[np.arange(ROWS), greedy].all()
    # Entropy over the legal actions only, computed here from the logits by hand.
    legal = np.where(mask, out.numpy().astype(np.float64), -np.inf)
    p = np.exp(legal - legal.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = -(p * np.log(np.where(mask, p, 1.0))).sum(1)
    np.testing.assert_allclose(entropy.numpy(), expected, rtol=1e-4, atol=1e-5)
    # One legal action: it is certain, with no entropy.
    np.testing.assert_array_equal(actions[:8], np.arange(8) % spec.action_dim)
    np.testing.assert_allclose(logp[:8], 0.0, atol=1e-6)
    np.testing.assert_allclose(entropy[:8].numpy(), 0.0, atol=1e-6)
    # The learner's gradient through masked rows stays finite.
    model.zero_grad()
    t_logp, entropy = model.log_prob_entropy(t_obs, torch.as_tensor(actions), tmask)
    (t_logp.sum() + entropy.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.actor.parameters())


def test_agents_of_one_type_and_space_may_share_a_policy_and_unlike_ones_are_refused() -> None:
    assert [agent_type(a) for a in ("adversary_0", "agent_12", "player", "knight_x")] == \
        ["adversary", "agent", "player", "knight_x"]
    small = PolicySpec((4,), "discrete", 2)
    shared = AgentMapping.build({"agent_0": small, "agent_1": small}, lambda a: "shared")
    assert shared.policy_of == {"agent_0": "shared", "agent_1": "shared"} and list(shared.policies) == ["shared"]
    unlike = {"adversary_0": PolicySpec((8,), "discrete", 5), "agent_0": PolicySpec((10,), "discrete", 5)}
    with pytest.raises(ConfigError, match="policy team: agents adversary_0 and agent_0 are of different"):
        AgentMapping.build(unlike, lambda a: "team")
    by_type = AgentMapping.build(unlike, agent_type)
    assert by_type.policies == {"adversary": unlike["adversary_0"], "agent": unlike["agent_0"]}


def test_a_learner_of_two_policies_updates_each_on_its_own_rows_and_publishes_them_together() -> None:
    cfg = load_train_config(CONFIGS / "ppo_cartpole.yaml", ["rollout.envs_per_worker=4",
                                                            "rollout.fragment_length=16"])
    cartpole = probe(cfg.env, "ppo").agents[SINGLE_AGENT]
    mapping = AgentMapping.build({"agent_0": cartpole, "agent_1": cartpole}, {"agent_0": "p0", "agent_1": "p1"}.get)
    learner = Learner(cfg, mapping, torch.device("cpu"))
    first = learner.publish()
    assert list(first.policies) == ["p0", "p1"] and [c.version for c in first.policies.values()] == [0, 0]
    # Independent policies start from different weights.
    assert not np.array_equal(first.policies["p0"].weights["actor.0.weight"],
                              first.policies["p1"].weights["actor.0.weight"])

    # Real CartPole rows from a one-policy actor, handed to p0 only.
    one = AgentMapping.build({SINGLE_AGENT: cartpole}, lambda a: "p0")
    worker = RolloutWorker(cfg, one, learner.algorithm.collection, worker_index=0, seed=3)
    worker.policies["p0"].load(first.policies["p0"].weights)
    worker.version = 0
    frag = worker.sample([None], 0)
    assert list(frag.batches) == ["p0"]
    metrics = learner.update([frag], 0.0)
    assert "p0/losses/policy_loss" in metrics and not any(k.startswith("p1/") for k in metrics)
    assert "losses/policy_loss" not in metrics

    second = learner.publish()
    assert second.version == 1 and [c.version for c in second.policies.values()] == [1, 0]
    for key, before in first.policies["p1"].weights.items():
        np.testing.assert_array_equal(second.policies["p1"].weights[key], before)
    assert not np.array_equal(second.policies["p0"].weights["actor.0.weight"],
                              first.policies["p0"].weights["actor.0.weight"])
    # Both policies' state goes into a checkpoint and comes back.
    restored = Learner(cfg, mapping, torch.device("cpu"))
    restored.load_state_dict(learner.state_dict())
    for pid in ("p0", "p1"):
        for key, value in second.policies[pid].weights.items():
            np.testing.assert_array_equal(restored.publish().policies[pid].weights[key], value)


def test_a_checkpoint_of_the_previous_format_is_refused_in_one_line(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "old-run"
    (run_dir / "checkpoints").mkdir(parents=True)
    buffer = io.BytesIO()
    torch.save({"format": 2, "state": {"trainer": {"learner": {"model": {}}}, "config": {}},
                "env_states": [None], "env_hmac": ""}, buffer)
    data = buffer.getvalue()
    path = run_dir / "checkpoints" / "ckpt-0000001.pt"
    path.write_bytes(data)
    path.with_name(path.name + ".json").write_text(
        json.dumps({"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}))
    assert main(["eval", str(path)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "not a checkpoint of this rlkit version" in err[0], err
