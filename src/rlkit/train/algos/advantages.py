"""Advantage estimators, in numpy so they can be checked by hand."""

from __future__ import annotations

import numpy as np


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    dones: np.ndarray,
    bootstrap: np.ndarray,
    last_value: np.ndarray,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation over a time-major [T, N] fragment.

    ``dones[t]`` marks an episode that ended at step t (terminated or
    truncated); ``bootstrap[t]`` is V(final observation) where it was a
    truncation and 0 otherwise, so a time limit still sees the future value.
    Returns (advantages, value targets).
    """
    T = len(rewards)
    advantages = np.zeros_like(rewards)
    last_gae = np.zeros_like(last_value)
    for t in reversed(range(T)):
        next_value = last_value if t == T - 1 else values[t + 1]
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * (next_value * not_done + bootstrap[t]) - values[t]
        last_gae = delta + gamma * lam * not_done * last_gae
        advantages[t] = last_gae
    return advantages, advantages + values


def group_advantages(returns: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """GRPO's per-episode advantage: (return - group mean) / group std.

    The standard deviation is the population one (ddof=0); a group whose
    returns are all equal carries no signal and gets advantage 0.
    """
    adv = np.zeros_like(returns, dtype=np.float32)
    for g in np.unique(groups):
        members = groups == g
        r = returns[members].astype(np.float64)
        std = r.std()
        if std > 1e-8:
            adv[members] = (r - r.mean()) / std
    return adv
