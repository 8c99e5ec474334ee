"""``train()``: one training run from config to final checkpoint, usable from Python."""

from __future__ import annotations

import signal
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from rlkit.config import TrainConfig
from rlkit.errors import BadInputError
from rlkit.train import checkpoint as ckpt
from rlkit.train.envs import EnvSpec, probe
from rlkit.train.rollout import peak_rss_mb


@dataclass
class TrainSummary:
    run_dir: str
    name: str
    stop_reason: str
    global_step: int
    updates: int
    episodes: int
    rolling_return: float | None
    wall_s: float
    sps: float
    checkpoint: str
    device: str
    driver_peak_rss_mb: float
    actor_peak_rss_mb: float
    """The largest peak resident memory of any rollout actor."""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _check_resources(config: TrainConfig) -> None:
    import ray

    need = config.rollout.num_workers * config.rollout.num_cpus_per_worker
    have = ray.cluster_resources().get("CPU", 0.0)
    if need > have:
        raise BadInputError(
            f"rollout.num_workers={config.rollout.num_workers} x num_cpus_per_worker="
            f"{config.rollout.num_cpus_per_worker} needs {need:g} CPUs; the Ray cluster has {have:g}",
            "lower rollout.num_workers or rollout.num_cpus_per_worker",
        )


def train(
    config: TrainConfig,
    *,
    address: str | None = None,
    resume: Path | None = None,
    quiet: bool = True,
    on_update: Callable[[int, dict[str, float]], None] | None = None,
    notify: Callable[[str], None] = ckpt.to_stderr,
) -> TrainSummary:
    """Train until a stop condition; returns a summary.

    Ctrl-C (SIGINT) stops the run after the iteration in progress and saves a
    checkpoint, so the checkpoint holds exactly what was logged; a second
    Ctrl-C raises KeyboardInterrupt at once and saves nothing more.

    With ``resume``, ``config`` should be the run's own (``load_run_config``)
    and training continues in that run directory from its newest good
    checkpoint; ``notify`` gets one line for each thing skipped on the way.
    """
    from rlkit.train.session import ray_session

    # Validate the environment (and an explicit CUDA request) before paying for Ray's start-up.
    spec = probe(config.env, config.algo.name)
    if config.device == "cuda":
        from rlkit.train.learner import resolve_device

        resolve_device(config.device)
    loaded = None
    if resume is not None:
        run_dir = resume
        loaded = ckpt.load_latest(run_dir, with_env=True)
        ckpt.check_resumable(loaded.state["config"], config)
        for note in loaded.notes:
            notify(note)
    else:
        run_dir = ckpt.new_run_dir(config)

    # Importing torch and building the learner take seconds, mostly in C code,
    # while ray.init mostly waits for its processes: do both at once. Ray is
    # imported first, as both imports would otherwise queue on the GIL.
    import ray  # noqa: F401

    learner = _Background(lambda: _build_learner(config, spec))
    with ray_session(address):
        _check_resources(config)
        from rlkit.train.runlog import RunLog
        from rlkit.train.trainer import Trainer

        trainer = Trainer(config, spec, get_learner=learner.result)
        log: RunLog | None = None
        try:
            path = None
            if loaded is not None:
                trainer.load_state_dict(loaded.state["trainer"], loaded.env_states)
                path = loaded.path
                ckpt.set_aside(loaded.skipped)
                # Only now: a resume that fails leaves the run's config as it was.
                ckpt.write_run_config(run_dir, config)
            log = RunLog(run_dir, config, quiet, start_step=trainer.global_step)
            saved_at = trainer.learner.updates if loaded is not None else -1
            with _StopAtBoundary() as interrupt:
                while (reason := trainer.stop_reason()) is None:
                    metrics = trainer.step()
                    updates = trainer.learner.updates
                    log.log(trainer.global_step, updates, trainer.elapsed, metrics)
                    if on_update is not None:
                        on_update(updates, metrics)
                    if updates % config.checkpoint.every_updates == 0:
                        path, saved_at = _save(run_dir, trainer, config, log), updates
                    if interrupt.requested:
                        reason = "interrupted"
                        break
                if saved_at != trainer.learner.updates:
                    path = _save(run_dir, trainer, config, log)
            summary = TrainSummary(
                run_dir=str(run_dir), name=config.name, stop_reason=reason,
                global_step=trainer.global_step, updates=trainer.learner.updates,
                episodes=trainer.episodes, rolling_return=trainer.rolling_return,
                wall_s=round(trainer.elapsed, 3), sps=round(trainer.global_step / max(trainer.elapsed, 1e-9), 1),
                checkpoint=str(path), device=str(trainer.learner.device),
                driver_peak_rss_mb=round(peak_rss_mb(), 1),
                actor_peak_rss_mb=round(trainer.actor_peak_rss_mb, 1),
            )
        finally:
            if log is not None:
                log.close()
            trainer.close()
    return summary


class _Background:
    """Runs ``fn`` on a daemon thread; ``result()`` waits and re-raises what it raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn = fn
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as err:  # handed to the caller of result()
            self._error = err

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _build_learner(config: TrainConfig, spec: EnvSpec):
    import rlkit.train.runlog  # noqa: F401  (its TensorBoard import is paid here too)
    from rlkit.train.learner import Learner, resolve_device

    return Learner(config, spec, resolve_device(config.device))


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
        # Signals reach the main thread only; an ignored SIGINT (nohup) stays ignored.
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


def _save(run_dir: Path, trainer, config: TrainConfig, log) -> Path:
    # What the checkpoint holds is on disk in the log first.
    log.flush()
    state = {"trainer": trainer.state_dict(), "config": config.model_dump(mode="json")}
    return ckpt.save_checkpoint(run_dir, trainer.learner.updates, state, config.checkpoint.keep,
                                trainer.env_states())
