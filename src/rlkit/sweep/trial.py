"""One Tune trial: rlkit's own training loop, reporting every iteration.

The trial runs in Tune's trial actor on the learner bundle of its placement
group; its rollout actors go into the group's other bundles. Its directory
inside the sweep directory is laid out like an ``rlkit train`` run
(config.yaml, tb/, metrics.jsonl) next to Tune's files, and each checkpoint
is a small run directory (config.yaml, checkpoints/ckpt-N.pt) so that
``rlkit eval CHECKPOINT_DIR`` works on it.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlkit.errors import ConfigError
from rlkit.sweep.spec import SweepSpec

EVENTS_FILE = "events.jsonl"
# These need a finished episode, so an early iteration may lack them.
_EPISODE_METRICS = ("charts/episodic_return", "charts/episodic_length", "charts/rolling_return")


@dataclass(frozen=True)
class TrialPlan:
    """What every trial of a sweep shares (handed to Tune by ``with_parameters``)."""

    spec: SweepSpec
    sweep_dir: str


def trial_device(spec: SweepSpec) -> str:
    """The learner's device follows the GPUs the trial reserved, unless the base config pins one."""
    device = spec.base_config.device
    if device != "auto":
        return device
    return "cuda" if spec.file.resources.learner_gpus > 0 else "cpu"


def run_trial(config: dict[str, Any], plan: TrialPlan) -> None:
    """The Tune trainable: ``config`` holds this trial's hyperparameters only."""
    import ray
    from ray import tune
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from rlkit.train import checkpoint as ckpt
    from rlkit.train.envs import probe
    from rlkit.train.loop import Iteration, run_loop, save
    from rlkit.train.runlog import RunLog
    from rlkit.train.trainer import Trainer

    context = tune.get_context()
    trial_id = context.get_trial_id()
    # Tune's working directory is named like the trial's directory in the sweep.
    trial_dir = Path(plan.sweep_dir) / Path(context.get_trial_dir()).name
    trial_dir.mkdir(parents=True, exist_ok=True)
    spec = plan.spec
    cfg = spec.trial_config(config, name=f"{spec.name}-{trial_id}", device=trial_device(spec))
    (trial_dir / ckpt.CONFIG_FILE).write_text(cfg.to_yaml())
    env_spec = probe(cfg.env, cfg.algo.name)

    group = ray.util.get_current_placement_group()
    strategy = None if group is None else PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=-1)
    trainer = Trainer(cfg, env_spec, placement=strategy)
    log: RunLog | None = None
    try:
        last_result = _restore(trainer, cfg, trial_id, trial_dir)
        if last_result is not None and trainer.stop_reason() is not None:
            # The driver died after this trial finished but before Tune noted it.
            tune.report(last_result)
            return
        log = RunLog(trial_dir, cfg, quiet=True, start_step=trainer.global_step)

        def after(it: Iteration) -> None:
            assert log is not None
            # A scheduler may end this process at any report: what is logged must be on disk.
            log.flush()
            result = _result(it.metrics, trainer, spec.file.metric, it.updates == 1)
            result["stop_reason"] = it.stop_reason or ""
            if not it.checkpoint_due:
                tune.report(result)
                return
            # Each checkpoint is a small run directory, so rlkit eval reads it.
            with tempfile.TemporaryDirectory(prefix="rlkit-trial-ckpt-") as tmp:
                run_dir = Path(tmp)
                (run_dir / ckpt.CHECKPOINT_DIR).mkdir()
                (run_dir / ckpt.CONFIG_FILE).write_text(cfg.to_yaml())
                save(trainer, run_dir, keep=1, trial_id=trial_id, last_result=result)
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(tmp))

        run_loop(trainer, log, spec.checkpoint_every(), after)
    finally:
        if log is not None:
            log.close()
        trainer.close()


def _restore(trainer: Any, cfg: Any, trial_id: str, trial_dir: Path) -> dict[str, Any] | None:
    """Load Tune's checkpoint for this trial, if any: its own (a retry, a resumed
    sweep) or another trial's (PBT exploiting). Returns its last result.

    It goes through the same verified loader as ``rlkit train --resume``: a
    checkpoint is data, and env state signed elsewhere is skipped (and noted).
    """
    from ray import tune

    from rlkit.train import checkpoint as ckpt

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        loaded = ckpt.load_latest(Path(directory), with_env=True)
    state = loaded.state
    ckpt.check_resumable(state["config"], cfg)
    # A donor's (PBT) optimizer state comes with its learning rate: each
    # update sets this trial's own from its config.
    trainer.load_state_dict(state["trainer"], loaded.env_states)
    source = state["trial_id"]
    event = {"time": round(time.time(), 3), "event": "resumed" if source == trial_id else "cloned",
             "from": source, "step": trainer.global_step}
    if loaded.notes:
        event["notes"] = loaded.notes
    with (trial_dir / EVENTS_FILE).open("a") as f:
        f.write(json.dumps(event) + "\n")
    return state["last_result"]


def _result(metrics: dict[str, float], trainer: Any, metric: str, first: bool) -> dict[str, Any]:
    """What Tune receives: the iteration's metrics, with the sweep's metric always present."""
    if metric not in metrics and metric != "global_step":
        if first and metric not in _EPISODE_METRICS:
            raise ConfigError(f"metric {metric}: training does not report it",
                              f"choose one of {', '.join(sorted(metrics))}")
        # NaN: schedulers skip it, where a missing metric would stop the sweep.
        metrics = {**metrics, metric: math.nan}
    return {**metrics, "global_step": trainer.global_step, "episodes": trainer.episodes}


def read_events(trial_dir: Path) -> list[dict[str, Any]]:
    try:
        lines = (trial_dir / EVENTS_FILE).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]
