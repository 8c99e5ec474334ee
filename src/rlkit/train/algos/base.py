"""The algorithm of a run: one object, chosen once from ``config.algo``.

It says what rollout actors collect for it, turns what they collected into
training rows (advantages), computes the loss and runs the per-update hooks
(learning-rate and clip-range schedules, the reference-policy refresh). The
learner and the rollout pool ask it; nothing else looks at which algorithm a
config names.

No torch here: rollout actors read ``Collection`` from this module, and
torch stays out of their processes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rlkit.config import AlgoConfig

if TYPE_CHECKING:
    import torch

    from rlkit.train.torch_model import ActorCritic

Batch = dict[str, np.ndarray]
Tensors = dict[str, "torch.Tensor"]


@dataclass(frozen=True)
class Collection:
    """What the rollout must collect for an algorithm."""

    critic: bool
    """Whether policies have a value head (values and bootstraps are recorded while acting)."""
    group_size: int | None
    """Whole groups of this many episodes, each group from one reset seed; None: fixed-length fragments."""


class Algorithm(ABC):
    def __init__(self, cfg: AlgoConfig) -> None:
        self.cfg = cfg

    @property
    @abstractmethod
    def collection(self) -> Collection: ...

    def lr(self, progress: float) -> float:
        """The learning rate at ``progress`` in [0, 1] of the run."""
        # Learning-rate annealing: linear decay to zero over the run.
        return self.cfg.lr * max(0.0, 1.0 - progress) if self.cfg.anneal_lr else self.cfg.lr

    def clip(self, progress: float) -> float:
        # Clip-range annealing: the trust region narrows as the run ends.
        return self.cfg.clip_coef * max(0.0, 1.0 - progress) if self.cfg.anneal_clip else self.cfg.clip_coef

    def reference(self, model: ActorCritic) -> ActorCritic | None:
        """A frozen copy of ``model`` the loss measures against, where the algorithm has one."""
        return None

    @abstractmethod
    def rows(self, batch: Batch) -> Batch:
        """One fragment's batch of one policy as flat training rows, advantages included."""

    def prepare(self, rows: Tensors, reference: ActorCritic | None) -> None:
        """Add what the loss needs beyond the rows, once per update (before the minibatch epochs)."""

    @abstractmethod
    def loss(self, model: ActorCritic, mb: Tensors, clip: float) -> tuple[torch.Tensor, Tensors]:
        """The loss on one minibatch, and its statistics under CleanRL's tag names."""

    def batch_metrics(self, rows: Batch) -> dict[str, float]:
        """Statistics of the update's whole batch."""
        return {}

    def after_update(self, model: ActorCritic, reference: ActorCritic | None, policy_updates: int) -> None:
        """Runs after each update of a policy; ``policy_updates`` counts that policy's updates so far."""


def make_algorithm(cfg: AlgoConfig) -> Algorithm:
    # Imported here: both subclass Algorithm and import torch, which this module must not.
    from rlkit.train.algos.grpo import GRPO
    from rlkit.train.algos.ppo import PPO

    return {"ppo": PPO, "grpo": GRPO}[cfg.name](cfg)
