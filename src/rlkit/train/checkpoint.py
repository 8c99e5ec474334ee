"""Run directories and checkpoints.

A run directory is ``<runs_dir>/<name>-<timestamp>/`` with config.yaml (the
resolved config), tb/, checkpoints/ and metrics.jsonl. A checkpoint holds
everything needed to continue exactly: learner, optimizer, counters,
normaliser, RNG states and, where the envs can be pickled, the actors' envs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from rlkit.config import TrainConfig, load_train_config
from rlkit.errors import BadInputError

CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"


def new_run_dir(config: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(config.runs_dir) / f"{config.name}-{stamp}"
    run_dir, n = base, 1
    while True:
        try:
            run_dir.mkdir(parents=True)
            break
        except FileExistsError:
            n += 1
            run_dir = base.with_name(f"{base.name}-{n}")
    (run_dir / CHECKPOINT_DIR).mkdir()
    (run_dir / CONFIG_FILE).write_text(config.to_yaml())
    return run_dir


def load_run_config(run_dir: Path, overrides: list[str] | None = None) -> TrainConfig:
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise BadInputError(f"{run_dir}: not a run directory (no {CONFIG_FILE})",
                            "pass the runs/<name>-<timestamp> directory that rlkit train created")
    return load_train_config(config_path, overrides)


def checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / CHECKPOINT_DIR).glob("ckpt-*.pt"))


def latest_checkpoint(run_dir: Path) -> Path:
    found = checkpoints(run_dir)
    if not found:
        raise BadInputError(f"{run_dir}: no checkpoint in {run_dir / CHECKPOINT_DIR}",
                            "a run writes one every checkpoint.every_updates updates and at the end")
    return found[-1]


def save_checkpoint(run_dir: Path, updates: int, state: dict[str, Any], keep: int) -> Path:
    import torch

    path = run_dir / CHECKPOINT_DIR / f"ckpt-{updates:07d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    # Atomic: a crash mid-write never leaves a truncated checkpoint behind.
    os.replace(tmp, path)
    for old in checkpoints(run_dir)[:-keep]:
        old.unlink()
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as err:
        raise BadInputError(f"{path}: cannot read checkpoint: {err}") from None
