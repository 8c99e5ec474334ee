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
from rlkit.train.torch_model import ActorCritic, CentralCritic


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
    ret_rms: RunningMeanStd | None = None
    """With ``env.normalize_reward``: the moments of the discounted return, the rewards' scale."""
    version: int = 0
    """This policy's updates so far."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "reference": self.reference.state_dict() if self.reference else None,
            "obs_rms": self.obs_rms.state_dict() if self.obs_rms else None,
            "ret_rms": self.ret_rms.state_dict() if self.ret_rms else None,
            "version": self.version,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.reference is not None and state["reference"] is not None:
            self.reference.load_state_dict(state["reference"])
        self.obs_rms = RunningMeanStd.from_state_dict(state["obs_rms"]) if state["obs_rms"] else None
        # normalize_reward may be turned on at a resume (or the checkpoint predate it): the scale starts afresh.
        if self.ret_rms is not None and state.get("ret_rms"):
            self.ret_rms = RunningMeanStd.from_state_dict(state["ret_rms"])
        self.version = state["version"]


@dataclass
class CriticState:
    """mappo's central critic and its optimizer."""

    model: CentralCritic
    optimizer: FlatAdam


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
        self.critic: CriticState | None = None
        if mapping.critic_dim is not None:
            critic = CentralCritic(mapping.critic_dim, config.model).to(device)
            self.critic = CriticState(critic, FlatAdam(critic, lr=config.algo.lr, eps=1e-5))
        # Multi-agent policies report under a prefix each; a single-agent run keeps CleanRL's tag names.
        self.prefixed = mapping.mode != "single" or len(mapping.policies) > 1
        self.shuffle = torch.Generator().manual_seed(config.seed)
        self.version = 0
        """The version of the published set of policies: what fragments are tagged with."""
        self.updates = 0

    def _policy_state(self, pspec: PolicySpec) -> PolicyState:
        own_critic = self.algorithm.collection.critic and self.mapping.critic_dim is None
        model = ActorCritic(pspec, self.cfg.model, critic=own_critic).to(self.device)
        # Adam with eps=1e-5, CleanRL's setting for PPO.
        optimizer = FlatAdam(model, lr=self.cfg.algo.lr, eps=1e-5)
        obs_rms = RunningMeanStd.zeros((pspec.obs_dim,)) if self.cfg.env.normalize_obs else None
        ret_rms = RunningMeanStd.zeros((1,)) if self.cfg.env.normalize_reward else None
        return PolicyState(model, optimizer, self.algorithm.reference(model), obs_rms, ret_rms)

    def publish(self) -> Published:
        """Every policy's numpy weights and normaliser: one object, put in the object store once."""
        critic = None if self.critic is None else PolicyCopy(self.version, self.critic.model.numpy_weights(), None)
        return Published(self.version, {
            pid: PolicyCopy(s.version, s.model.numpy_weights(), copy.deepcopy(s.obs_rms) if s.obs_rms else None)
            for pid, s in self.policies.items()
        }, critic)

    def update(self, fragments: list[Fragment], progress: float) -> dict[str, float]:
        """One update of every policy the fragments hold rows of; ``progress`` in [0, 1] drives the schedules."""
        metrics: dict[str, float] = {}
        critic_rows: list[dict[str, np.ndarray]] = []
        for pid, state in self.policies.items():
            batches = [frag.batches[pid] for frag in fragments if pid in frag.batches]
            if not batches:
                continue
            stats = [frag.obs_stats[pid] for frag in fragments if frag.obs_stats and pid in frag.obs_stats]
            ret_stats = [frag.return_stats[pid] for frag in fragments
                         if frag.return_stats and pid in frag.return_stats]
            result, rows = self._update_policy(state, batches, stats, ret_stats, progress)
            critic_rows.append(rows)
            metrics.update({f"{pid}/{k}" if self.prefixed else k: v for k, v in result.items()})
        if self.critic is not None and critic_rows:
            metrics.update({f"critic/{k}": v for k, v in self._update_critic(critic_rows, progress).items()})
        self.version += 1
        self.updates += 1
        return metrics

    def _minibatches(self, size: int) -> list[torch.Tensor | None]:
        # Minibatch epochs over a fresh shuffle each time, in equal parts (the
        # batch size varies with masked autoreset rows); one whole-batch
        # minibatch needs no shuffle, its losses being means.
        splits = min(self.cfg.algo.num_minibatches, size)
        if splits <= 1:
            return [None]
        return list(torch.randperm(size, generator=self.shuffle).to(self.device).tensor_split(splits))

    def _update_policy(self, state: PolicyState, batches: list[dict[str, np.ndarray]],
                       obs_stats: list[RunningMeanStd], return_stats: list[RunningMeanStd],
                       progress: float) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        algorithm, algo = self.algorithm, self.cfg.algo
        if state.obs_rms is not None:
            for stats in obs_stats:
                state.obs_rms.merge(stats)
        if state.ret_rms is not None:
            for stats in return_stats:
                state.ret_rms.merge(stats)
            # One scale for the whole update, this update's returns included (SB3 updates, then scales).
            batches = [{**b, "rewards": state.ret_rms.scale(b["rewards"], self.cfg.env.clip_reward)} for b in batches]
        parts = [algorithm.rows(b) for b in batches]
        batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        t = {k: torch.as_tensor(v, device=self.device) for k, v in batch.items()}
        state.optimizer.lr = algorithm.lr(progress)
        clip = algorithm.clip(progress)
        algorithm.prepare(t, state.reference)

        history: list[dict[str, torch.Tensor]] = []
        for _epoch in range(algo.update_epochs):
            for idx in self._minibatches(len(t["obs"])):
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
        if state.model.critic is not None:
            metrics.update(algorithm.batch_metrics(batch))
        state.version += 1
        algorithm.after_update(state.model, state.reference, state.version)
        return metrics, batch

    def _update_critic(self, parts: list[dict[str, np.ndarray]], progress: float) -> dict[str, float]:
        """mappo: the central critic's value loss, over every policy's rows together."""
        assert self.critic is not None
        algorithm, algo = self.algorithm, self.cfg.algo
        batch = {k: np.concatenate([p[k] for p in parts]) for k in ("critic_obs", "values", "returns")}
        t = {k: torch.as_tensor(v, device=self.device) for k, v in batch.items()}
        optimizer = self.critic.optimizer
        optimizer.lr = algorithm.lr(progress)
        clip = algorithm.clip(progress)
        losses = []
        for _epoch in range(algo.update_epochs):
            for idx in self._minibatches(len(t["values"])):
                mb = t if idx is None else {k: v[idx] for k, v in t.items()}
                loss = algorithm.value_loss(self.critic.model.value(mb["critic_obs"]), mb, clip)
                optimizer.zero_grad()
                loss.backward()
                optimizer.clip_grad_norm(algo.max_grad_norm)
                optimizer.step()
                losses.append(loss.detach())
        metrics = {"losses/value_loss": float(torch.stack(losses).mean())}
        metrics.update(algorithm.batch_metrics(batch))
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {
            "policies": {pid: s.state_dict() for pid, s in self.policies.items()},
            "critic": None if self.critic is None else {"model": self.critic.model.state_dict(),
                                                       "optimizer": self.critic.optimizer.state_dict()},
            "shuffle_rng": self.shuffle.get_state(),
            "torch_rng": torch.get_rng_state(),
            "version": self.version,
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for pid, s in self.policies.items():
            s.load_state_dict(state["policies"][pid])
        if self.critic is not None:
            self.critic.model.load_state_dict(state["critic"]["model"])
            self.critic.optimizer.load_state_dict(state["critic"]["optimizer"])
        self.shuffle.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng"])
        self.version = state["version"]
        self.updates = state["updates"]
