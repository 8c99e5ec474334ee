"""``train()``: one training run from config to final checkpoint, usable from Python."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from rlkit.config import TrainConfig
from rlkit.errors import BadInputError
from rlkit.train import checkpoint as ckpt
from rlkit.train.agents import AgentMapping, build_mapping
from rlkit.train.encoder import make_encoder
from rlkit.train.envs import probe
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
    timeline: dict[str, float] = field(default_factory=dict)
    """Seconds from this process's start to ``ray_ready``, ``first_update``
    and ``last_update``: where a run's fixed cost goes."""

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

    # Validate the environment, the agent mapping (and an explicit CUDA request) before paying for Ray's start-up.
    spec = probe(config.env, config.algo.name)
    mapping = build_mapping(config, spec)
    for pspec in mapping.policies.values():
        make_encoder(pspec, config.model)  # a cnn on vector observations fails here, before Ray starts
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
        if loaded.env_states is not None and None in loaded.env_states:
            notify(f"{loaded.path.name}: the environments hold objects that cannot be saved (a physics engine's"
                   " handles), so they start new episodes: the resumed run is not an exact continuation")
    else:
        run_dir = ckpt.new_run_dir(config)

    # Importing torch and building the learner take seconds, mostly in C code,
    # while ray.init mostly waits for its processes: do both at once. Ray is
    # imported first, as both imports would otherwise queue on the GIL.
    import ray  # noqa: F401

    learner = _Background(lambda: _build_learner(config, mapping))
    timeline = _Timeline()
    with ray_session(address):
        timeline.mark("ray_ready")
        _check_resources(config)
        from rlkit.train.loop import Iteration, run_loop, save
        from rlkit.train.runlog import RunLog
        from rlkit.train.trainer import Trainer

        trainer = Trainer(config, spec, get_learner=learner.result, mapping=mapping)
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

            def after(it: Iteration) -> Path | None:
                timeline.mark_once("first_update")
                return save(trainer, run_dir, config.checkpoint.keep) if it.checkpoint_due else None

            reason, saved = run_loop(trainer, log, config.checkpoint.every_updates, after)
            timeline.mark("last_update")
            summary = TrainSummary(
                run_dir=str(run_dir), name=config.name, stop_reason=reason,
                global_step=trainer.global_step, updates=trainer.learner.updates,
                episodes=trainer.episodes, rolling_return=trainer.rolling_return,
                wall_s=round(trainer.elapsed, 3), sps=round(trainer.global_step / max(trainer.elapsed, 1e-9), 1),
                checkpoint=str(saved or path), device=str(trainer.learner.device),
                driver_peak_rss_mb=round(peak_rss_mb(), 1),
                actor_peak_rss_mb=round(trainer.actor_peak_rss_mb, 1), timeline=timeline.marks,
            )
        finally:
            if log is not None:
                log.close()
            trainer.close()
    return summary


class _Timeline:
    """Moments of the run, in seconds since the kernel started this process
    (``/proc``: what a user waits for includes the interpreter's start-up and
    the imports); since this object was made where there is no ``/proc``."""

    def __init__(self) -> None:
        self._start = time.monotonic() - _process_age()
        self.marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self.marks[name] = round(time.monotonic() - self._start, 3)

    def mark_once(self, name: str) -> None:
        if name not in self.marks:
            self.mark(name)


def _process_age() -> float:
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            # Field 22, after the command name (which may hold spaces): start time in clock ticks after boot.
            start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
            # CLOCK_BOOTTIME, as /proc/uptime counts.
            return float(uptime.read().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


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


def _build_learner(config: TrainConfig, mapping: AgentMapping):
    import rlkit.train.runlog  # noqa: F401  (its TensorBoard import is paid here too)
    from rlkit.train.learner import Learner, resolve_device

    return Learner(config, mapping, resolve_device(config.device))
