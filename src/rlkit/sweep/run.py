"""``run_sweep``: a sweep from spec to best config, usable from Python.

The sweep directory (``<storage_path>/<name>-<timestamp>/``) is Tune's
experiment directory: Tune's state, one directory per trial (laid out like an
``rlkit train`` run), and rlkit's own files: sweep.yaml (the resolved sweep,
what ``--resume`` reads), rlkit-sweep.json (progress, for ``rlkit status``)
and, at the end, best_config.yaml.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlkit.errors import BadInputError, ConfigError
from rlkit.sweep import records, tuning
from rlkit.sweep.progress import Tracker, saved_rows, tracking
from rlkit.sweep.state import FAILED, FINISHED, INTERRUPTED, SweepProgress, TrialRow
from rlkit.sweep.spec import SweepSpec, build_spec
from rlkit.sweep.trial import read_events

SPEC_FILE = "sweep.yaml"
BEST_CONFIG_FILE = "best_config.yaml"
_DONE = ("TERMINATED", "ERROR")
# Tune's own console output and logger files: rlkit shows its table instead,
# and writes TensorBoard logs per trial itself.
_QUIET_TUNE_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}


@dataclass
class TrialSummary:
    trial_id: str
    status: str
    iterations: int
    global_step: int
    metric: float | None
    params: dict[str, Any]
    path: str
    checkpoint: str | None
    failures: int
    stopped_early: bool
    """Ended by the scheduler (ASHA) or the sweep's stop, not by its training stop condition."""
    error: str | None = None
    cloned_from: list[str] = field(default_factory=list)
    """Trials whose checkpoints PBT copied into this one, in order."""


@dataclass
class SweepResult:
    name: str
    path: str
    metric: str
    mode: str
    state: str
    """finished, interrupted (continue with --resume) or failed (no trial finished)."""
    wall_s: float
    trials: list[TrialSummary]
    best_trial: str | None = None
    best_metric: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_config: str | None = None
    """A ready-to-train YAML: ``rlkit train BEST_CONFIG``."""
    best_checkpoint: str | None = None

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for trial in self.trials:
            counts[trial.status] = counts.get(trial.status, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "counts": self.counts()}


@dataclass
class SweepPlan:
    """What a sweep would run (``--dry-run``), computed without Ray."""

    name: str
    sweep_dir: str
    trials: int
    bundles: list[dict[str, float]]
    placement: str
    scheduler: str
    search: str
    metric: str
    mode: str
    space: dict[str, Any]
    max_concurrent_trials: int | None
    max_failures: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_storage(spec: SweepSpec) -> Path:
    return Path(spec.file.storage_path or Path(spec.base_config.runs_dir) / "sweeps").expanduser().resolve()


def new_sweep_dir(spec: SweepSpec) -> Path:
    base = default_storage(spec) / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    sweep_dir, n = base, 1
    while True:
        try:
            sweep_dir.mkdir(parents=True)
            return sweep_dir
        except FileExistsError:
            n += 1
            sweep_dir = base.with_name(f"{base.name}-{n}")


def plan_sweep(spec: SweepSpec) -> SweepPlan:
    group = tuning.placement(spec)
    bundles = ([{}] if group.head_bundle_is_empty else []) + [dict(b) for b in group.bundles]
    return SweepPlan(
        name=spec.name, sweep_dir=str(default_storage(spec) / f"{spec.name}-<timestamp>"),
        trials=tuning.trial_count(spec), bundles=bundles, placement=spec.file.resources.placement,
        scheduler=spec.file.scheduler.type, search=spec.file.search.type, metric=spec.file.metric,
        mode=spec.file.mode, space={k: d.to_yaml() for k, d in spec.file.space.items()},
        max_concurrent_trials=spec.file.max_concurrent_trials, max_failures=spec.file.max_failures,
    )


def load_sweep_dir(sweep_dir: Path) -> SweepSpec:
    """The spec a sweep directory was started with."""
    from rlkit.config import load_yaml

    path = sweep_dir / SPEC_FILE
    if not path.is_file():
        raise BadInputError(f"{sweep_dir}: not a sweep directory (no {SPEC_FILE})",
                            "pass the directory that rlkit sweep printed, e.g. runs/sweeps/NAME-TIMESTAMP")
    return build_spec(load_yaml(path), str(path), sweep_dir)


def run_sweep(
    spec: SweepSpec,
    *,
    address: str | None = None,
    on_progress: Callable[[SweepProgress], None] | None = None,
    register: bool = True,
) -> SweepResult:
    """Run every trial of ``spec`` on the embedded local Ray (or ``address``,
    or RAY_ADDRESS inside a Ray job) and write the best trial's config.
    ``register`` records the sweep for ``rlkit status`` (a sweep sent as a
    job was recorded by the machine that sent it)."""
    from rlkit.train.session import ray_session

    with ray_session(address):
        _preflight(spec, default_storage(spec))
        sweep_dir = new_sweep_dir(spec)
        (sweep_dir / SPEC_FILE).write_text(spec.to_yaml())
        return _drive(spec, sweep_dir, on_progress, resume=False, register=register)


def resume_sweep(
    sweep_dir: Path,
    *,
    address: str | None = None,
    on_progress: Callable[[SweepProgress], None] | None = None,
    register: bool = True,
) -> SweepResult:
    """Continue an interrupted sweep: finished trials are kept, unfinished ones
    continue from their last checkpoint and errored ones are tried again."""
    from ray.tune import Tuner

    sweep_dir = sweep_dir.expanduser().resolve()
    spec = load_sweep_dir(sweep_dir)
    pid = records.live_driver(sweep_dir)
    if pid is not None:
        raise BadInputError(f"{sweep_dir}: its driver (pid {pid}) is still running it",
                            "wait for it, or stop it (Ctrl-C) before resuming")
    if not Tuner.can_restore(str(sweep_dir)):
        raise BadInputError(f"{sweep_dir}: Tune saved no state there yet, so there is nothing to resume",
                            f"start it again with rlkit sweep {sweep_dir / SPEC_FILE}")
    from rlkit.train.session import ray_session

    with ray_session(address):
        _preflight(spec, sweep_dir)
        return _drive(spec, sweep_dir, on_progress, resume=True, register=register)


def _trainable(spec: SweepSpec, sweep_dir: Path) -> Any:
    from ray import tune

    from rlkit.sweep.trial import TrialPlan, run_trial

    return tune.with_resources(tune.with_parameters(run_trial, plan=TrialPlan(spec, str(sweep_dir))),
                               tuning.resources(spec))


def _trial_dirname(trial: Any) -> str:
    return str(trial.trial_id)


def _tuner(spec: SweepSpec, sweep_dir: Path, resume: bool) -> Any:
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from rlkit.sweep.progress import Relay

    trainable = _trainable(spec, sweep_dir)
    if resume:
        return tune.Tuner.restore(str(sweep_dir), trainable, resume_unfinished=True, resume_errored=True)
    file = spec.file
    return tune.Tuner(
        trainable,
        param_space=tuning.param_space(spec),
        tune_config=tune.TuneConfig(
            metric=file.metric, mode=file.mode, num_samples=file.num_samples,
            scheduler=tuning.scheduler(spec), search_alg=tuning.search_alg(spec),
            max_concurrent_trials=file.max_concurrent_trials, time_budget_s=file.stop.time_budget_s,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=sweep_dir.name, storage_path=str(sweep_dir.parent), verbose=0,
            stop=tuning.stopper(spec),
            failure_config=tune.FailureConfig(max_failures=file.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.keep_checkpoints()),
            # Relay first: the table hears of a result before the loggers write it.
            callbacks=[Relay(), JsonLoggerCallback(), CSVLoggerCallback()],
        ),
    )


@contextmanager
def _quiet_tune() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in _QUIET_TUNE_ENV}
    loggers = [logging.getLogger(n) for n in ("ray.tune", "ray.train", "ray.air")]
    levels = [lg.level for lg in loggers]
    os.environ.update(_QUIET_TUNE_ENV)
    for lg in loggers:
        # Failed trials are reported in rlkit's table and summary, not as tracebacks.
        lg.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            # Actor reuse would keep a stopped trial's rollout actors in its placement group.
            warnings.filterwarnings("ignore", message="Consider boosting PBT performance")
            yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _preflight(spec: SweepSpec, storage: Path) -> None:
    """Refuse, before anything is written, a sweep this cluster cannot run."""
    from rlkit.sweep.checks import check_fits, check_shared_storage

    check_fits(spec)
    check_shared_storage(storage)


def _drive(spec: SweepSpec, sweep_dir: Path, on_progress: Callable[[SweepProgress], None] | None,
           resume: bool, register: bool) -> SweepResult:
    started = time.monotonic()
    progress = SweepProgress(spec.name, str(sweep_dir), spec.file.metric, spec.file.mode)
    tracker = Tracker(progress, on_progress)
    tracker.write()
    if register:
        records.save_record(records.local_record(spec.name, sweep_dir))
    try:
        with _quiet_tune(), tracking(tracker):
            _tuner(spec, sweep_dir, resume).fit()
    except BaseException:
        tracker.finish(INTERRUPTED)
        raise
    progress.trials = saved_rows(sweep_dir, spec.file.metric)
    result = summarize(spec, sweep_dir, progress.trials, time.monotonic() - started)
    tracker.finish(result.state)
    return result


def _state(rows: list[TrialRow], spec: SweepSpec, wall_s: float) -> str:
    stop = spec.file.stop
    sign = 1.0 if spec.file.mode == "max" else -1.0
    # The sweep's own stop conditions leave trials unfinished on purpose.
    stopped = ((stop.time_budget_s is not None and wall_s >= stop.time_budget_s)
               or (stop.target is not None
                   and any(r.metric is not None and sign * (r.metric - stop.target) >= 0 for r in rows)))
    if any(r.status not in _DONE for r in rows) and not stopped:
        return INTERRUPTED
    if not any(r.status == "TERMINATED" and r.metric is not None for r in rows):
        return FAILED
    return FINISHED


def _error_line(trial_dir: Path) -> str | None:
    try:
        lines = [ln.strip() for ln in (trial_dir / "error.txt").read_text().splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1] if lines else "failed (no error text)"


def _latest_checkpoint(trial_dir: Path) -> str | None:
    found = sorted(trial_dir.glob("checkpoint_*"))
    return str(found[-1]) if found else None


def summarize(spec: SweepSpec, sweep_dir: Path, rows: list[TrialRow], wall_s: float) -> SweepResult:
    """The sweep's outcome from the trials' last rows and their directories;
    writes best_config.yaml when a trial finished with a metric."""
    trials = []
    for row in rows:
        trial_dir = sweep_dir / row.trial_id
        trials.append(TrialSummary(
            trial_id=row.trial_id, status=row.status, iterations=row.iteration, global_step=row.global_step,
            metric=row.metric, params=row.params, path=str(trial_dir), checkpoint=_latest_checkpoint(trial_dir),
            failures=row.failures, stopped_early=row.status == "TERMINATED" and not row.stop_reason,
            error=_error_line(trial_dir) if row.status == "ERROR" else None,
            cloned_from=[e["from"] for e in read_events(trial_dir) if e["event"] == "cloned"],
        ))
    result = SweepResult(spec.name, str(sweep_dir), spec.file.metric, spec.file.mode,
                         _state(rows, spec, wall_s), round(wall_s, 3), trials)
    scored = [t for t in trials if t.metric is not None and t.status != "ERROR"]
    if scored:
        pick = max if spec.file.mode == "max" else min
        best = pick(scored, key=lambda t: t.metric)
        result.best_trial, result.best_metric, result.best_params = best.trial_id, best.metric, best.params
        result.best_checkpoint = best.checkpoint
        result.best_config = str(write_best_config(spec, sweep_dir, best))
    return result


def write_best_config(spec: SweepSpec, sweep_dir: Path, best: TrialSummary) -> Path:
    import yaml

    config = spec.trial_config(best.params, name=f"{spec.name}-best")
    data = config.model_dump(mode="json")
    if "runs_dir" not in spec.base:
        # Left out, it follows RLKIT_RUNS_DIR (or runs/) wherever it is trained.
        data.pop("runs_dir")
    path = sweep_dir / BEST_CONFIG_FILE
    header = (f"# Best trial {best.trial_id} of sweep {spec.name}: {spec.file.metric} = {best.metric:g}\n"
              f"# Train it: rlkit train {path}\n")
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return path


def check_resumable(sweep_dir: Path, overrides: list[str]) -> None:
    if overrides:
        raise ConfigError("--resume continues a sweep as it was started; --set cannot change it",
                          f"edit nothing, or start a new sweep from {sweep_dir / SPEC_FILE}")
