"""The driver's side of a running sweep: Tune calls ``Relay`` (a callback it
pickles into the experiment state, so it holds nothing), and the relay hands
the trials to the active ``Tracker``, which calls the caller's
``on_progress`` and writes the sweep's state file for ``rlkit status``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ray.tune import Callback

from rlkit.files import atomic_write
from rlkit.sweep.state import STATE_FILE, SweepProgress, TrialRow, now_iso, number

_WRITE_EVERY_S = 1.0
# Tune steps many times a second; the table needs a few refreshes at most.
_REFRESH_EVERY_S = 0.25


def trial_row(trial: Any, metric: str) -> TrialRow:
    result = trial.last_result or {}
    return TrialRow(
        trial_id=trial.trial_id, status=str(trial.status),
        iteration=int(result.get("training_iteration", 0) or 0),
        global_step=int(result.get("global_step", 0) or 0),
        metric=number(result.get(metric)),
        params=dict(trial.config),
        failures=int(trial.run_metadata.num_failures),
        stop_reason=str(result.get("stop_reason", "")),
    )


def saved_rows(sweep_dir: Path, metric: str) -> list[TrialRow]:
    """The trials as Tune's last saved experiment state has them: what a resume
    starts from. After Ctrl-C Tune marks the trials it stopped as terminated
    in memory, but saved them as they were (running, pending)."""
    from ray.tune import ExperimentAnalysis

    trials = ExperimentAnalysis(str(sweep_dir)).trials
    return sorted((trial_row(t, metric) for t in trials), key=lambda r: r.trial_id)


class Tracker:
    def __init__(self, progress: SweepProgress, on_progress: Callable[[SweepProgress], None] | None = None) -> None:
        self.progress = progress
        self.on_progress = on_progress
        self.last_write = 0.0
        self.last_update = 0.0

    def update(self, trials: list[Any], force: bool = False) -> None:
        if not force and time.monotonic() - self.last_update < _REFRESH_EVERY_S:
            return
        self.last_update = time.monotonic()
        rows = [trial_row(t, self.progress.metric) for t in trials]
        if rows == self.progress.trials and not force:
            return
        self.progress.trials = rows
        self.progress.updated = now_iso()
        if self.on_progress is not None:
            self.on_progress(self.progress)
        if force or time.monotonic() - self.last_write >= _WRITE_EVERY_S:
            self.write()

    def finish(self, state: str) -> None:
        self.progress.state = state
        self.progress.updated = now_iso()
        self.write()
        if self.on_progress is not None:
            self.on_progress(self.progress)

    def write(self) -> None:
        self.last_write = time.monotonic()
        atomic_write(Path(self.progress.path) / STATE_FILE, json.dumps(self.progress.to_dict(), indent=1) + "\n")


_active: Tracker | None = None


@contextmanager
def tracking(tracker: Tracker) -> Iterator[Tracker]:
    global _active
    _active = tracker
    try:
        yield tracker
    finally:
        _active = None


class Relay(Callback):
    """Tune's events to the active tracker (a resumed sweep gets this very
    class back from Tune's saved state, with the new run's tracker active)."""

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if _active is not None:
            _active.update(trials)

    def _changed(self, trials: list[Any]) -> None:
        if _active is not None:
            _active.update(trials, force=True)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._changed(trials)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._changed(trials)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._changed(trials)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self._changed(trials)
