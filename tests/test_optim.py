"""rlkit's flat Adam takes the steps torch.optim.Adam and clip_grad_norm_ take."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from rlkit.train.optim import FlatAdam


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))


def _loss(model: nn.Module, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(32, 4, generator=g), torch.randn(32, 3, generator=g)
    return ((model(x) - y) ** 2).mean() * (10.0 if seed % 2 else 0.1)


@pytest.mark.parametrize("max_norm", [0.05, 100.0])
def test_steps_match_torch_adam_with_clipping(max_norm: float) -> None:
    ours, theirs = _model(), _model()
    flat = FlatAdam(ours, lr=3e-3, eps=1e-5)
    ref = torch.optim.Adam(theirs.parameters(), lr=3e-3, eps=1e-5, foreach=False)
    for step in range(20):
        if step == 10:
            flat.lr = ref.param_groups[0]["lr"] = 1e-3  # annealed mid-run
        flat.zero_grad()
        _loss(ours, step).backward()
        norm = flat.clip_grad_norm(max_norm)
        ref.zero_grad()
        _loss(theirs, step).backward()
        ref_norm = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm)
        torch.testing.assert_close(norm, ref_norm)
        flat.step()
        ref.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(ours[0].weight, _model()[0].weight)


def test_state_round_trip_continues_identically() -> None:
    model = _model()
    opt = FlatAdam(model, lr=1e-2)
    for step in range(3):
        opt.zero_grad()
        _loss(model, step).backward()
        opt.step()
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), opt.state_dict()

    def continue_from(state_model: dict, state_opt: dict) -> list[torch.Tensor]:
        m = _model()
        o = FlatAdam(m, lr=0.5)
        m.load_state_dict(state_model)
        o.load_state_dict(state_opt)
        for step in range(3, 6):
            o.zero_grad()
            _loss(m, step).backward()
            o.step()
        return [p.detach().clone() for p in m.parameters()]

    first, second = continue_from(saved_model, saved_opt), continue_from(saved_model, saved_opt)
    for step in range(3, 6):
        opt.zero_grad()
        _loss(model, step).backward()
        opt.step()
    for a, b, c in zip(first, second, model.parameters()):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_a_learner_update_never_imports_torch_dynamo() -> None:
    # The reason FlatAdam exists: torch.optim's first step imports torch._dynamo,
    # seconds of CPU at start-up. A fresh interpreter shows what an update imports.
    code = """
import sys, torch
from rlkit.config import load_train_config
from rlkit.train.agents import DEFAULT_POLICY, agent_mapping
from rlkit.train.envs import probe
from rlkit.train.learner import Learner
from rlkit.train.rollout import RolloutWorker
from tests.conftest import CONFIGS
for name in ("ppo_cartpole", "grpo_cartpole"):
    cfg = load_train_config(CONFIGS / f"{name}.yaml", [])
    spec = probe(cfg.env, cfg.algo.name)
    learner = Learner(cfg, agent_mapping(spec), torch.device("cpu"))
    worker = RolloutWorker(cfg, learner.mapping, learner.algorithm.collection, worker_index=0, seed=3)
    worker.policies[DEFAULT_POLICY].load(learner.publish().policies[DEFAULT_POLICY].weights)
    worker.version = 0
    frag = worker.sample([None], 0)
    metrics = learner.update([frag], 0.5)
    assert metrics["charts/learning_rate"] == cfg.algo.lr / 2
print("torch._dynamo" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent)
    assert out.stdout.strip() == "False"


def test_a_torch_optim_state_from_an_older_checkpoint_is_refused_in_one_line() -> None:
    from rlkit.errors import BadInputError

    model = _model()
    old = torch.optim.Adam(model.parameters(), lr=1e-3).state_dict()
    with pytest.raises(BadInputError, match="older rlkit"):
        FlatAdam(_model(), lr=1e-3).load_state_dict(old)
