"""The learner: the model on its device, the optimizer and one update step."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from rlkit.config import GRPOConfig, PPOConfig, TrainConfig
from rlkit.errors import ConfigError
from rlkit.train.algos.advantages import gae, group_advantages
from rlkit.train.algos.grpo import grpo_loss
from rlkit.train.algos.ppo import ppo_loss
from rlkit.train.envs import DEFAULT_POLICY, EnvSpec
from rlkit.train.normalize import RunningMeanStd
from rlkit.train.optim import FlatAdam
from rlkit.train.rollout import Fragment, Published
from rlkit.train.torch_model import ActorCritic


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda: no CUDA device is visible to torch", "use --device cpu or auto")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


class Learner:
    def __init__(self, config: TrainConfig, spec: EnvSpec, device: torch.device) -> None:
        self.cfg = config
        self.algo = config.algo
        self.device = device
        self.grpo = isinstance(self.algo, GRPOConfig)
        if device.type == "cpu" and config.learner_threads:
            # Small models gain nothing from intra-op threads, and idle OpenMP
            # threads spin, taking CPU from the rollout actors beside them.
            torch.set_num_threads(config.learner_threads)
        torch.manual_seed(config.seed)
        pspec = spec.policies[DEFAULT_POLICY]
        self.model = ActorCritic(pspec, config.model, critic=not self.grpo).to(device)
        self.ref_model = copy.deepcopy(self.model).requires_grad_(False) if self.grpo else None
        # Adam with eps=1e-5, CleanRL's setting for PPO.
        self.optimizer = FlatAdam(self.model, lr=self.algo.lr, eps=1e-5)
        self.shuffle = torch.Generator().manual_seed(config.seed)
        self.obs_rms = RunningMeanStd.zeros((pspec.obs_dim,)) if config.env.normalize_obs else None
        self.version = 0
        self.updates = 0

    def publish(self) -> Published:
        obs_norm = {DEFAULT_POLICY: copy.deepcopy(self.obs_rms)} if self.obs_rms else None
        return Published(self.version, {DEFAULT_POLICY: self.model.numpy_weights()}, obs_norm)

    def _batch(self, fragments: list[Fragment]) -> dict[str, np.ndarray]:
        parts: list[dict[str, np.ndarray]] = []
        for frag in fragments:
            b = frag.batches[DEFAULT_POLICY]
            if isinstance(self.algo, PPOConfig):
                adv, ret = gae(b["rewards"], b["values"], b["dones"], b["bootstrap"], b["last_value"],
                               self.algo.gamma, self.algo.gae_lambda)
                time_major = {
                    "obs": b["obs"], "actions": b["actions"], "logprobs": b["logprobs"],
                    "values": b["values"], "advantages": adv, "returns": ret,
                }
                # Flatten [T, N, ...] to [T*N, ...] rows, keeping real transitions only
                # (autoreset rows carry no experience).
                keep = b["valid"].reshape(-1) > 0
                parts.append({k: v.reshape(-1, *v.shape[2:])[keep] for k, v in time_major.items()})
            else:
                # Every step of an episode carries that episode's group-relative advantage.
                ep_adv = group_advantages(b["episode_returns"], b["episode_groups"])
                parts.append({
                    "obs": b["obs"], "actions": b["actions"], "logprobs": b["logprobs"],
                    "advantages": ep_adv[b["episode_index"]],
                })
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def update(self, fragments: list[Fragment], progress: float) -> dict[str, float]:
        """One update on the given fragments; ``progress`` in [0, 1] drives LR annealing."""
        algo = self.algo
        if self.obs_rms is not None:
            for frag in fragments:
                if frag.obs_stats:
                    self.obs_rms.merge(frag.obs_stats[DEFAULT_POLICY])
        batch = self._batch(fragments)
        t = {k: torch.as_tensor(v, device=self.device) for k, v in batch.items()}

        if algo.anneal_lr:
            # Learning-rate annealing: linear decay to zero over the run.
            self.optimizer.lr = algo.lr * max(0.0, 1.0 - progress)
        # Clip-range annealing: the trust region narrows as the run ends.
        clip = algo.clip_coef * max(0.0, 1.0 - progress) if algo.anneal_clip else algo.clip_coef
        if self.grpo:
            assert self.ref_model is not None
            with torch.no_grad():
                t["ref_logprobs"], _ = self.ref_model.log_prob_entropy(t["obs"], t["actions"])

        size = len(t["obs"])
        splits = min(algo.num_minibatches, size)
        history: list[dict[str, torch.Tensor]] = []
        for _epoch in range(algo.update_epochs):
            # Minibatch epochs over a fresh shuffle each time, in equal parts (the
            # batch size varies with masked autoreset rows); one whole-batch
            # minibatch needs no shuffle, its losses being means.
            parts: list[torch.Tensor | None] = [None]
            if splits > 1:
                parts = list(torch.randperm(size, generator=self.shuffle).to(self.device).tensor_split(splits))
            for idx in parts:
                mb = t if idx is None else {k: v[idx] for k, v in t.items()}
                if isinstance(algo, PPOConfig):
                    loss, stats = ppo_loss(self.model, mb, algo, clip)
                else:
                    loss, stats = grpo_loss(self.model, mb, algo, clip)
                self.optimizer.zero_grad()
                loss.backward()
                # Global gradient-norm clipping.
                self.optimizer.clip_grad_norm(algo.max_grad_norm)
                self.optimizer.step()
                history.append(stats)
            # Optional early stop once the policy moved too far from the rollout policy.
            if algo.target_kl is not None and float(stats["losses/approx_kl"]) > algo.target_kl:
                break

        # One device-to-host copy for all statistics, after the last step.
        means = torch.stack([torch.stack(list(h.values())) for h in history]).mean(0).tolist()
        metrics = dict(zip(history[0], means))
        metrics["charts/learning_rate"] = self.optimizer.lr
        metrics["charts/clip_coef"] = clip
        if isinstance(algo, PPOConfig):
            values, returns = batch["values"], batch["returns"]
            var = returns.var()
            metrics["losses/explained_variance"] = float("nan") if var == 0 else float(1 - (returns - values).var() / var)
        self.version += 1
        self.updates += 1
        if self.grpo and algo.ref_update_interval and self.updates % algo.ref_update_interval == 0:
            # Refresh the frozen reference policy to the current one.
            assert self.ref_model is not None
            self.ref_model.load_state_dict(self.model.state_dict())
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ref_model": self.ref_model.state_dict() if self.ref_model else None,
            "obs_rms": self.obs_rms.state_dict() if self.obs_rms else None,
            "shuffle_rng": self.shuffle.get_state(),
            "torch_rng": torch.get_rng_state(),
            "version": self.version,
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ref_model is not None and state["ref_model"] is not None:
            self.ref_model.load_state_dict(state["ref_model"])
        self.obs_rms = RunningMeanStd.from_state_dict(state["obs_rms"]) if state["obs_rms"] else None
        self.shuffle.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng"])
        self.version = state["version"]
        self.updates = state["updates"]
