"""Policy models: the torch actor-critic the learner trains, and a numpy copy.

Rollout actors run ``NumpyPolicy``: an MLP forward pass in numpy is faster
than torch at rollout batch sizes and keeps torch (about 220 MB and two
seconds of import) out of every actor process (the CNN's measurements are in
``rlkit.train.encoder``). Both sides read the same weight dict, so the numpy
log-probabilities match torch's to float precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from rlkit.config import ModelConfig
from rlkit.train.encoder import make_encoder
from rlkit.train.envs import PolicySpec
from rlkit.train.normalize import RunningMeanStd

Weights = dict[str, np.ndarray]


@dataclass
class PolicyCopy:
    """What an actor holds of one policy."""

    version: int
    """That policy's updates so far: an actor reloads a policy only when it changed."""
    weights: Weights
    obs_norm: RunningMeanStd | None


@dataclass
class Published:
    """Every policy of one version, put in the object store once and read by every actor."""

    version: int
    policies: dict[str, PolicyCopy]
    critic: PolicyCopy | None = None
    """mappo: the central critic (its weights' keys are ``critic.*``, read by ``NumpyPolicy.value``)."""
    opponents: dict[int, PolicyCopy] = field(default_factory=dict)
    """self_play: the pool's frozen snapshots by snapshot id, oldest first."""


class NumpyPolicy:
    """Inference-only mirror of ``ActorCritic`` for rollout actors."""

    def __init__(self, spec: PolicySpec, model: ModelConfig, critic: bool) -> None:
        self.spec = spec
        self.critic = critic
        self.encoder = make_encoder(spec, model)
        self.weights: Weights = {}
        if spec.action_kind == "continuous":
            self.low = np.asarray(spec.action_low, dtype=np.float32)
            self.high = np.asarray(spec.action_high, dtype=np.float32)

    def load(self, weights: Weights) -> None:
        self.weights = weights

    def _forward(self, prefix: str, x: np.ndarray) -> np.ndarray:
        return self.encoder.forward(self.weights, prefix, x)

    def value(self, obs: np.ndarray) -> np.ndarray:
        if not self.critic:
            return np.zeros(len(obs), dtype=np.float32)
        return self._forward("critic", obs)[:, 0]

    def act(self, obs: np.ndarray, rng: np.random.Generator,
            mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sample actions; returns (actions, log-probabilities, values).

        ``mask`` (discrete actions only) marks the legal actions of each row:
        the others get probability zero and are never drawn.
        """
        out = self._forward("actor", obs)
        if self.spec.action_kind == "discrete":
            if mask is not None:
                out = np.where(mask, out, -np.inf)
            logp_all = out - out.max(axis=1, keepdims=True)
            logp_all -= np.log(np.exp(logp_all).sum(axis=1, keepdims=True))
            # Inverse-CDF sampling: one uniform draw per row.
            cdf = np.cumsum(np.exp(logp_all), axis=1)
            u = rng.random((len(obs), 1)) * cdf[:, -1:]
            actions = np.minimum((cdf < u).sum(axis=1), self.spec.action_dim - 1)
            if mask is not None:
                # A draw of exactly 0 would pick action 0 even when illegal:
                # the first legal action is the one it stands for.
                actions = np.maximum(actions, mask.argmax(axis=1))
            logp = logp_all[np.arange(len(obs)), actions]
        else:
            log_std = self.weights["actor_logstd"]
            noise = rng.standard_normal(out.shape).astype(np.float32)
            actions = out + np.exp(log_std) * noise
            logp = (-0.5 * noise**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(axis=1)
        return actions, logp.astype(np.float32), self.value(obs)

    def act_deterministic(self, obs: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        out = self._forward("actor", obs)
        if self.spec.action_kind == "continuous":
            return out
        return (out if mask is None else np.where(mask, out, -np.inf)).argmax(axis=1)

    def env_actions(self, actions: np.ndarray) -> np.ndarray:
        """What the environment receives: Gaussian samples clipped to the Box bounds."""
        if self.spec.action_kind == "discrete":
            return actions
        return np.clip(actions, self.low, self.high)
