"""Running mean and variance, mergeable across rollout actors.

Observations: actors normalise with the statistics published alongside the
weights and report the raw moments of what they saw; the learner merges
those moments, so every actor of one policy version normalises identically.

Rewards (SB3's VecNormalize, CleanRL's NormalizeReward): actors keep each
stream's discounted return and report its raw moments; the learner merges
them and divides the rewards it trains on by the return's standard
deviation, once the moments of the update's own fragments are in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

EPS = 1e-8
"""Added to the variance before its square root, as SB3 and CleanRL do."""


@dataclass
class RunningMeanStd:
    mean: np.ndarray
    var: np.ndarray
    count: float = 1e-4

    @classmethod
    def zeros(cls, shape: tuple[int, ...]) -> RunningMeanStd:
        return cls(np.zeros(shape, np.float64), np.ones(shape, np.float64))

    @classmethod
    def of_batch(cls, x: np.ndarray) -> RunningMeanStd:
        x = x.reshape(-1, *x.shape[-1:]).astype(np.float64)
        return cls(x.mean(axis=0), x.var(axis=0), float(len(x)))

    def state_dict(self) -> dict[str, Any]:
        """Plain lists and a float (exact for float64): a checkpoint never pickles this class."""
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "count": float(self.count)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> RunningMeanStd:
        return cls(np.asarray(state["mean"], np.float64), np.asarray(state["var"], np.float64), float(state["count"]))

    def merge(self, other: RunningMeanStd) -> None:
        # Chan et al.'s parallel update of mean and variance.
        delta = other.mean - self.mean
        total = self.count + other.count
        m2 = self.var * self.count + other.var * other.count + delta**2 * self.count * other.count / total
        self.mean = self.mean + delta * other.count / total
        self.var = m2 / total
        self.count = total

    def normalize(self, x: np.ndarray, clip: float) -> np.ndarray:
        out = (x - self.mean) / np.sqrt(self.var + EPS)
        return np.clip(out, -clip, clip).astype(np.float32)

    def scale(self, x: np.ndarray, clip: float) -> np.ndarray:
        """Divided by the standard deviation, not centred: a reward's sign and zero stay as they were."""
        return np.clip(x / np.sqrt(self.var + EPS), -clip, clip).astype(np.float32)


class DiscountedReturn:
    """Each stream's discounted return so far in its episode: G = gamma * G + r, zero again after the episode's end.

    Its moments are the scale of reward normalisation. As in SB3's VecNormalize,
    the step that ends an episode still counts, with its reward in G.
    """

    def __init__(self, gamma: float, shape: tuple[int, ...]) -> None:
        self.gamma = gamma
        self.value = np.zeros(shape, np.float64)
        self._seen: list[np.ndarray] = []

    def step(self, rewards: np.ndarray, dones: np.ndarray, moved: np.ndarray) -> None:
        """Add one step of ``rewards`` where ``moved``; streams that made no transition (an
        autoreset row, a seat waiting for its turn) are left as they were and not counted."""
        self.value = np.where(moved, self.gamma * self.value + rewards, self.value)
        self._seen.append(self.value[moved])
        self.value = np.where(moved & (dones > 0), 0.0, self.value)

    def take_moments(self) -> RunningMeanStd | None:
        """The moments of every G counted since the last call (None if none was), to merge into the learner's."""
        seen, self._seen = np.concatenate(self._seen) if self._seen else np.zeros(0), []
        return RunningMeanStd.of_batch(seen.reshape(-1, 1)) if len(seen) else None
