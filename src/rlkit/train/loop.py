"""The one training loop, for ``rlkit train`` and Tune trials alike.

Each iteration collects, updates and publishes (``Trainer.step``), logs,
and decides whether a checkpoint is due: every ``every`` updates and at the
end, whatever ended the run. What to do with an iteration (report it to
Tune, write the checkpoint where it belongs) is the caller's; the state a
checkpoint holds is assembled in one place, ``save``.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rlkit.train import checkpoint as ckpt
from rlkit.train.runlog import RunLog
from rlkit.train.trainer import Trainer


@dataclass(frozen=True)
class Iteration:
    updates: int
    metrics: dict[str, float]
    stop_reason: str | None
    """Set on the last iteration: total_steps, target_return, time_budget or interrupted."""
    checkpoint_due: bool


def run_loop(trainer: Trainer, log: RunLog, every: int,
             after: Callable[[Iteration], Path | None]) -> tuple[str, Path | None]:
    """Train until a stop condition or Ctrl-C; returns why it stopped and the last checkpoint ``after`` wrote.

    ``after`` sees every iteration once it is logged, and must write a
    checkpoint when one is due (the log is flushed by then, so the checkpoint
    never runs ahead of it). Ctrl-C lets the iteration in progress finish;
    a second one raises KeyboardInterrupt at once. However the loop ends, the
    run log records why (``rlkit runs`` reads it).
    """
    path: Path | None = None
    reason = trainer.stop_reason()

    def end(why: str, error: str | None = None) -> None:
        log.end(why, trainer.global_step, trainer.learner.updates, trainer.elapsed, error)

    try:
        with _StopAtBoundary() as interrupt:
            while reason is None:
                metrics = trainer.step()
                updates = trainer.learner.updates
                log.log(trainer.global_step, updates, trainer.elapsed, metrics)
                reason = "interrupted" if interrupt.requested else trainer.stop_reason()
                due = reason is not None or updates % every == 0
                if due:
                    log.flush()
                path = after(Iteration(updates, metrics, reason, due)) or path
    except KeyboardInterrupt:
        end("interrupted")
        raise
    except BaseException as err:
        # `rlkit runs` shows this line; the traceback is the caller's to show.
        end("failed", " ".join(f"{type(err).__name__}: {err}".split())[:300])
        raise
    end(reason)
    return reason, path


def save(trainer: Trainer, run_dir: Path, keep: int, **extra: Any) -> Path:
    """Checkpoint the trainer into ``run_dir``: its state, the config, ``extra`` and the actors' envs."""
    state = {"trainer": trainer.state_dict(), "config": trainer.cfg.model_dump(mode="json"), **extra}
    return ckpt.save_checkpoint(run_dir, trainer.learner.updates, state, keep, trainer.env_states())


class _StopAtBoundary:
    """SIGINT asks the loop to stop at the end of the iteration in progress.

    A KeyboardInterrupt mid-iteration would leave steps counted that no
    update or log line holds, and the checkpoint would run ahead of the log.
    The second SIGINT gets Python's own handler back: KeyboardInterrupt, at once.
    """

    def __init__(self) -> None:
        self.requested = False
        self._installed = False
        self._previous: Any = None

    def __enter__(self) -> _StopAtBoundary:
        # Signals reach the main thread only (a Tune trial runs on another);
        # an ignored SIGINT (nohup) stays ignored.
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN):
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True
        return self

    def _on_sigint(self, _signum: int, _frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *_exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
