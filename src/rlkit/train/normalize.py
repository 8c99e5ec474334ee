"""Running mean and variance, mergeable across rollout actors.

Actors normalise with the statistics published alongside the weights and
report the raw moments of what they saw; the learner merges those moments,
so every actor of one policy version normalises identically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


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
        out = (x - self.mean) / np.sqrt(self.var + 1e-8)
        return np.clip(out, -clip, clip).astype(np.float32)
