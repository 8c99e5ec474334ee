"""A sweep's state file (rlkit-sweep.json in the sweep directory): one row per
trial, written by the driver as the sweep runs and read by ``rlkit status``.
Free of Ray, so reading it is quick."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

STATE_FILE = "rlkit-sweep.json"
RUNNING, FINISHED, INTERRUPTED, FAILED = "running", "finished", "interrupted", "failed"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class TrialRow:
    """One trial as the table shows it. ``status`` is Tune's: PENDING, RUNNING,
    PAUSED, TERMINATED or ERROR; ``stop_reason`` is empty when a scheduler
    (or the sweep's own stop) ended it before its training stop condition."""

    trial_id: str
    status: str
    iteration: int = 0
    global_step: int = 0
    metric: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    failures: int = 0
    stop_reason: str = ""


@dataclass
class SweepProgress:
    name: str
    path: str
    metric: str
    mode: str
    state: str = RUNNING
    started: str = field(default_factory=now_iso)
    updated: str = field(default_factory=now_iso)
    trials: list[TrialRow] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return dict(Counter(t.status for t in self.trials))

    def best(self) -> TrialRow | None:
        scored = [t for t in self.trials if t.metric is not None]
        if not scored:
            return None
        pick = max if self.mode == "max" else min
        return pick(scored, key=lambda t: t.metric)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepProgress:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["trials"] = [TrialRow(**t) for t in values.get("trials", [])]
        return cls(**values)


def read_progress(sweep_dir: Path) -> SweepProgress | None:
    """The sweep's state file, or None when there is none (yet) or it is unreadable."""
    try:
        return SweepProgress.from_dict(json.loads((sweep_dir / STATE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
