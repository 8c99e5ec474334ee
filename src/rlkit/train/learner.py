"""The learner: one model, optimizer and normaliser per policy, on its device.

The algorithm object (``rlkit.train.algos``) turns fragments into training
rows and computes the loss; the learner runs the minibatch epochs for each
policy that has rows, and publishes every policy of one version together.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rlkit.config import TrainConfig
from rlkit.errors import ConfigError
from rlkit.train.agents import AgentMapping
from rlkit.train.algos.base import Algorithm, make_algorithm
from rlkit.train.envs import PolicySpec
from rlkit.train.normalize import RunningMeanStd
from rlkit.train.optim import FlatAdam
from rlkit.train.policies import PolicyCopy, Published
from rlkit.train.rollout import Fragment
from rlkit.train.torch_model import ActorCritic


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda: no CUDA device is visible to torch", "use --device cpu or auto")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


@dataclass
class PolicyState:
    """Everything the learner keeps of one policy."""

    model: ActorCritic
    optimizer: FlatAdam
    reference: ActorCritic | None
    obs_rms: RunningMeanStd | None
    version: int = 0
    """This policy's updates so far."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "reference": self.reference.state_dict() if self.reference else None,
            "obs_rms": self.obs_rms.state_dict() if self.obs_rms else None,
            "version": self.version,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.reference is not None and state["reference"] is not None:
            self.reference.load_state_dict(state["reference"])
        self.obs_rms = RunningMeanStd.from_state_dict(state["obs_rms"]) if state["obs_rms"] else None
        self.version = state["version"]


class Learner:
    def __init__(self, config: TrainConfig, mapping: AgentMapping, device: torch.device) -> None:
        self.cfg = config
        self.device = device
        self.mapping = mapping
        self.algorithm: Algorithm = make_algorithm(config.algo)
        if device.type == "cpu" and config.learner_threads:
            # Small models gain nothing from intra-op threads, and idle OpenMP
            # threads spin, taking CPU from the rollout actors beside them.
            torch.set_num_threads(config.learner_threads)
        torch.manual_seed(config.seed)
        self.policies = {pid: self._policy_state(pspec) for pid, pspec in self.mapping.policies.items()}
        self.shuffle = torch.Generator().manual_seed(config.seed)
        self.version = 0
        """The version of the published set of policies: what fragments are tagged with."""
        self.updates = 0

    def _policy_state(self, pspec: PolicySpec) -> PolicyState:
        model = ActorCritic(pspec, self.cfg.model, critic=self.algorithm.collection.critic).to(self.device)
        # Adam with eps=1e-5, CleanRL's setting for PPO.
        optimizer = FlatAdam(model, lr=self.cfg.algo.lr, eps=1e-5)
        obs_rms = RunningMeanStd.zeros((pspec.obs_dim,)) if self.cfg.env.normalize_obs else None
        return PolicyState(model, optimizer, self.algorithm.reference(model), obs_rms)

    def publish(self) -> Published:
        """Every policy's numpy weights and normaliser: one object, put in the object store once."""
        return Published(self.version, {
            pid: PolicyCopy(s.version, s.model.numpy_weights(), copy.deepcopy(s.obs_rms) if s.obs_rms else None)
            for pid, s in self.policies.items()
        })

    def update(self, fragments: list[Fragment], progress: float) -> dict[str, float]:
        """One update of every policy the fragments hold rows of; ``progress`` in [0, 1] drives the schedules."""
        metrics: dict[str, float] = {}
        # One policy keeps CleanRL's tag names; several get one prefix each.
        prefixed = len(self.policies) > 1
        for pid, state in self.policies.items():
            batches = [frag.batches[pid] for frag in fragments if pid in frag.batches]
            if not batches:
                continue
            stats = [frag.obs_stats[pid] for frag in fragments if frag.obs_stats and pid in frag.obs_stats]
            result = self._update_policy(state, batches, stats, progress)
            metrics.update({f"{pid}/{k}" if prefixed else k: v for k, v in result.items()})
        self.version += 1
        self.updates += 1
        return metrics

    def _update_policy(self, state: PolicyState, batches: list[dict[str, np.ndarray]],
                       obs_stats: list[RunningMeanStd], progress: float) -> dict[str, float]:
        algorithm, algo = self.algorithm, self.cfg.algo
        if state.obs_rms is not None:
            for stats in obs_stats:
                state.obs_rms.merge(stats)
        parts = [algorithm.rows(b) for b in batches]
        batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        t = {k: torch.as_tensor(v, device=self.device) for k, v in batch.items()}
        state.optimizer.lr = algorithm.lr(progress)
        clip = algorithm.clip(progress)
        algorithm.prepare(t, state.reference)

        size = len(t["obs"])
        splits = min(algo.num_minibatches, size)
        history: list[dict[str, torch.Tensor]] = []
        for _epoch in range(algo.update_epochs):
            # Minibatch epochs over a fresh shuffle each time, in equal parts (the
            # batch size varies with masked autoreset rows); one whole-batch
            # minibatch needs no shuffle, its losses being means.
            minibatches: list[torch.Tensor | None] = [None]
            if splits > 1:
                minibatches = list(torch.randperm(size, generator=self.shuffle).to(self.device).tensor_split(splits))
            for idx in minibatches:
                mb = t if idx is None else {k: v[idx] for k, v in t.items()}
                loss, stats = algorithm.loss(state.model, mb, clip)
                state.optimizer.zero_grad()
                loss.backward()
                # Global gradient-norm clipping.
                state.optimizer.clip_grad_norm(algo.max_grad_norm)
                state.optimizer.step()
                history.append(stats)
            # Optional early stop once the policy moved too far from the rollout policy.
            if algo.target_kl is not None and float(stats["losses/approx_kl"]) > algo.target_kl:
                break

        # One device-to-host copy for all statistics, after the last step.
        means = torch.stack([torch.stack(list(h.values())) for h in history]).mean(0).tolist()
        metrics = dict(zip(history[0], means))
        metrics["charts/learning_rate"] = state.optimizer.lr
        metrics["charts/clip_coef"] = clip
        metrics.update(algorithm.batch_metrics(batch))
        state.version += 1
        algorithm.after_update(state.model, state.reference, state.version)
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {
            "policies": {pid: s.state_dict() for pid, s in self.policies.items()},
            "shuffle_rng": self.shuffle.get_state(),
            "torch_rng": torch.get_rng_state(),
            "version": self.version,
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for pid, s in self.policies.items():
            s.load_state_dict(state["policies"][pid])
        self.shuffle.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng"])
        self.version = state["version"]
        self.updates = state["updates"]
