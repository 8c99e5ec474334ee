"""Self-play: the pool of frozen snapshots a learning policy plays against.

The trainer admits the initial policy at update 0, hands the pool's
snapshots to the actors with each published version (``Published.opponents``),
records the outcomes the actors report, and asks after every update whether
the learner has earned a new snapshot (``maybe_admit``). Actors draw each
episode's opponent with ``draw_opponent``.

Rollout actors import this module, so it keeps torch out: only the
checkpoint methods import it, and only when called.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlkit.config import SelfPlayConfig
from rlkit.train.normalize import RunningMeanStd
from rlkit.train.policies import PolicyCopy


@dataclass(frozen=True)
class Outcome:
    """One finished game, from the learner's side."""

    opponent: int
    """Snapshot id the learner played against."""
    seat: int
    """The learner's seat: 0 moved first, 1 second."""
    result: int
    """+1 the learner won, 0 draw, -1 the learner lost."""


def outcome_of(learner_return: float, opponent_return: float) -> int:
    """+1, 0 or -1: games score a win as a higher return than the opponent's."""
    return (learner_return > opponent_return) - (learner_return < opponent_return)


def draw_opponent(ids: Sequence[int], cfg: SelfPlayConfig, rng: np.random.Generator) -> int:
    """One snapshot id from ``ids`` (oldest first): uniform, or weighted towards recent ones.

    ``recent`` weighs the k-th of n snapshots by ``cfg.recent_decay ** (n-1-k)``:
    the newest weighs 1, each older one ``recent_decay`` times the next.
    """
    n = len(ids)
    if n == 0:
        raise ValueError("draw_opponent: the pool is empty (the trainer admits the initial policy first)")
    if cfg.sampling == "uniform":
        return ids[int(rng.integers(n))]
    weights = cfg.recent_decay ** np.arange(n - 1, -1, -1, dtype=np.float64)
    return ids[int(rng.choice(n, p=weights / weights.sum()))]


class OpponentPool:
    """Frozen snapshots of the learner by id, and the outcomes of its recent games against them."""

    def __init__(self, cfg: SelfPlayConfig) -> None:
        self.cfg = cfg
        self.snapshots: dict[int, PolicyCopy] = {}
        """Snapshot id -> frozen copy, oldest first."""
        self._window: deque[Outcome] = deque(maxlen=cfg.window)

    def admit(self, copy: PolicyCopy, updates: int) -> int:
        """Add ``copy`` as snapshot ``updates`` (the learner's update count), evicting the oldest beyond the pool size."""
        if updates in self.snapshots:
            raise ValueError(f"OpponentPool.admit: a snapshot of update {updates} is already in the pool")
        self.snapshots[updates] = copy
        while len(self.snapshots) > self.cfg.pool_size:
            ids = list(self.snapshots)
            # The first snapshot (the untrained, near-uniform policy) may stay for good: weak,
            # varied play the learner keeps meeting, so it never forgets to punish it.
            del self.snapshots[ids[1] if self.cfg.keep_first and len(ids) > 1 else ids[0]]
        # Rates are against the pool as it now is: games against the old pool no longer say
        # whether the learner beats the new one.
        self._window.clear()
        return updates

    def record(self, outcomes: Iterable[Outcome]) -> None:
        """Add finished games; only the last ``cfg.window`` count."""
        self._window.extend(outcomes)

    def _share(self, result: int) -> float:
        return sum(o.result == result for o in self._window) / len(self._window)

    def maybe_admit(self, updates: int, current: Callable[[], PolicyCopy]) -> bool:
        """Admit ``current()`` when the learner beats the pool often enough, or a snapshot is due by the clock."""
        cfg = self.cfg
        by_rate = (cfg.win_rate is not None and len(self._window) == cfg.window
                   and self._share(1) >= cfg.win_rate)
        by_clock = bool(cfg.snapshot_every) and updates % cfg.snapshot_every == 0
        if by_rate or by_clock:
            self.admit(current(), updates)
        return by_rate or by_clock

    def metrics(self) -> dict[str, float]:
        """Rates over the window (once a game is recorded), the pool size and the window's games."""
        out: dict[str, float] = {}
        if self._window:
            out["selfplay/win_rate"] = self._share(1)
            out["selfplay/draw_rate"] = self._share(0)
            out["selfplay/loss_rate"] = self._share(-1)
        out["selfplay/pool_size"] = float(len(self.snapshots))
        out["selfplay/window_games"] = float(len(self._window))
        return out

    def state_dict(self) -> dict[str, Any]:
        """Tensors, lists and numbers only: loadable with ``torch.load(weights_only=True)``."""
        import torch

        return {
            "snapshots": [
                {"id": sid, "version": c.version,
                 "weights": {k: torch.from_numpy(np.array(v, copy=True)) for k, v in c.weights.items()},
                 "obs_norm": c.obs_norm.state_dict() if c.obs_norm is not None else None}
                for sid, c in self.snapshots.items()
            ],
            "window": [[o.opponent, o.seat, o.result] for o in self._window],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a saved pool; a resume with a smaller pool_size or window keeps the newest."""
        self.snapshots = {
            int(s["id"]): PolicyCopy(
                int(s["version"]), {k: t.numpy() for k, t in s["weights"].items()},
                RunningMeanStd.from_state_dict(s["obs_norm"]) if s["obs_norm"] is not None else None)
            for s in state["snapshots"]
        }
        while len(self.snapshots) > self.cfg.pool_size:
            del self.snapshots[next(iter(self.snapshots))]
        self._window = deque((Outcome(int(o), int(s), int(r)) for o, s, r in state["window"]), maxlen=self.cfg.window)
