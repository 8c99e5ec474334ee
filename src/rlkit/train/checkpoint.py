"""Run directories and checkpoints: the one writer and the one loader.

A run directory is ``<runs_dir>/<name>-<timestamp>/`` with config.yaml (the
resolved config), tb/, checkpoints/, metrics.jsonl and run.json (its process
record, ``rlkit.train.runs``). A checkpoint holds
everything needed to continue exactly: learner, optimizer, counters,
normaliser, RNG states and, where the envs can be pickled, the actors' envs.

Loading never runs code from the file. Everything but the environments is
tensors and plain data, read with ``torch.load(weights_only=True)``. The
environments need pickle, so their bytes carry an HMAC under this user's key
(``$RLKIT_HOME/checkpoint.key``, 0600) and are unpickled only when it
verifies: a checkpoint from anyone else resumes with fresh environments.
Each ``ckpt-N.pt`` has a sidecar ``ckpt-N.pt.json`` with its size and sha256,
written after it, so a checkpoint cut short or damaged is known as such and
the newest good one is used instead.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import pickle
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlkit import paths
from rlkit.config import TrainConfig, load_train_config
from rlkit.errors import BadInputError, ConfigError
from rlkit.files import atomic_write

CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
# 3: the learner's state is per policy (models, optimizers, normalisers keyed by policy id).
FORMAT = 3
SUMS_SUFFIX = ".json"
SET_ASIDE_SUFFIX = ".damaged"
# What fixes the shapes of the saved tensors and environment state: a resume keeps them.
RESUME_FIXED = ("env.id", "env.kwargs", "env.preprocess", "env.normalize_obs", "env.vectorization",
                "rollout.envs_per_worker", "model", "algo.name",
                "multiagent.mode", "multiagent.policies", "multiagent.agent_onehot")


@dataclass
class Loaded:
    """A verified checkpoint."""

    path: Path
    state: dict[str, Any]
    env_states: list[bytes | None] | None
    """The actors' pickled envs: only when asked for and signed by this user's key."""
    notes: list[str] = field(default_factory=list)
    """One line each for what was skipped: damaged newer checkpoints, unverifiable env state."""
    skipped: list[Path] = field(default_factory=list)
    """Newer checkpoints that failed verification."""


class _Damaged(Exception):
    """Cut short, altered or half-written: an older checkpoint may still do."""


def to_stderr(note: str) -> None:
    """Where the loader's notes go unless the caller shows them its own way."""
    print(note, file=sys.stderr)


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
    write_run_config(run_dir, config)
    return run_dir


def write_run_config(run_dir: Path, config: TrainConfig) -> None:
    atomic_write(run_dir / CONFIG_FILE, config.to_yaml())


def load_run_config(run_dir: Path, overrides: list[str] | None = None) -> TrainConfig:
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise BadInputError(f"{run_dir}: not a run directory (no {CONFIG_FILE})",
                            "pass the runs/<name>-<timestamp> directory that rlkit train created")
    return load_train_config(config_path, overrides)


def check_resumable(saved_config: dict[str, Any], config: TrainConfig) -> None:
    """Refuse a config that changes what the saved state's shapes depend on."""
    new = config.model_dump(mode="json")
    defaults = TrainConfig().model_dump(mode="json")
    for key in RESUME_FIXED:
        before, after, default = _get(saved_config, key), _get(new, key), _get(defaults, key)
        # A run saved before a setting existed (env.preprocess, model.encoder) ran with its default.
        if before is None:
            before = default
        elif isinstance(before, dict) and isinstance(default, dict):
            before = {**default, **before}
        if before != after:
            raise ConfigError(
                f"{key}: the checkpoint was trained with {json.dumps(before)}, not {json.dumps(after)},"
                " and its saved state has those shapes",
                "resume without changing it, or start a new run",
            )


def _get(data: dict[str, Any], dotted: str) -> Any:
    for key in dotted.split("."):
        data = data.get(key) if isinstance(data, dict) else None
    return data


def checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / CHECKPOINT_DIR).glob("ckpt-*.pt"))


def _sums_path(path: Path) -> Path:
    return path.with_name(path.name + SUMS_SUFFIX)


def save_checkpoint(run_dir: Path, updates: int, state: dict[str, Any], keep: int,
                    env_states: list[bytes | None]) -> Path:
    """Write ``state`` (tensors and plain data only) and the actors' env pickles, signed."""
    import torch

    payload = {"format": FORMAT, "state": state, "env_states": env_states,
               "env_hmac": _env_mac(_signing_key(), env_states)}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    path = run_dir / CHECKPOINT_DIR / f"ckpt-{updates:07d}.pt"
    sums = _sums_path(path)
    # The sidecar comes last: a crash in between leaves a checkpoint without
    # one, which reads as unfinished, never a sidecar vouching for other bytes.
    sums.unlink(missing_ok=True)
    atomic_write(path, data)
    atomic_write(sums, json.dumps({"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}))
    for old in checkpoints(run_dir)[:-keep]:
        old.unlink()
        _sums_path(old).unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, *, with_env: bool = False) -> Loaded:
    """One checkpoint file, verified; bad input if it is damaged."""
    try:
        return _load(path, with_env)
    except _Damaged as err:
        raise BadInputError(f"{path}: {err}", "pick an older checkpoint, or pass the run directory") from None


def load_latest(run_dir: Path, *, with_env: bool = False) -> Loaded:
    """The newest checkpoint of ``run_dir`` that verifies; its notes name the ones skipped."""
    found = checkpoints(run_dir)
    if not found:
        raise BadInputError(f"{run_dir}: no checkpoint in {run_dir / CHECKPOINT_DIR}",
                            "a run writes one every checkpoint.every_updates updates and at the end")
    reasons: list[str] = []
    for path in reversed(found):
        try:
            loaded = _load(path, with_env)
        except _Damaged as err:
            reasons.append(f"{path.name} ({err})")
            continue
        if reasons:
            loaded.notes.insert(0, f"skipped {', '.join(reasons)}: using {path.name}")
            loaded.skipped = found[len(found) - len(reasons):]
        return loaded
    raise BadInputError(f"{run_dir}: no usable checkpoint: {', '.join(reasons)}",
                        "start a new run; these files cannot be resumed or evaluated")


def set_aside(damaged: list[Path]) -> None:
    """Rename damaged checkpoints out of the way (kept for inspection), so that
    the run's new checkpoints are the newest again and pruning keeps those."""
    for path in damaged:
        path.replace(path.with_name(path.name + SET_ASIDE_SUFFIX))
        _sums_path(path).unlink(missing_ok=True)


def _load(path: Path, with_env: bool) -> Loaded:
    import torch

    data = _verified_bytes(path)
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise BadInputError(
            f"{path}: refused: it holds objects that would run code when loaded",
            "rlkit writes tensors and plain data only, so this file is not rlkit's or was altered",
        ) from None
    except (RuntimeError, EOFError, ValueError) as err:
        raise _Damaged(f"unreadable: {str(err).splitlines()[0]}") from None
    state = payload.get("state") if isinstance(payload, dict) else None
    if not isinstance(state, dict) or payload.get("format") != FORMAT or not {"trainer", "config"} <= state.keys():
        raise BadInputError(f"{path}: not a checkpoint of this rlkit version",
                            "evaluate or resume it with the rlkit that wrote it, or start a new run")
    loaded = Loaded(path, state, None)
    if with_env:
        loaded.env_states = _verified_env(payload, path, loaded.notes)
    return loaded


def _verified_bytes(path: Path) -> bytes:
    try:
        sums = json.loads(_sums_path(path).read_text())
        size, digest = int(sums["size"]), str(sums["sha256"])
    except FileNotFoundError:
        raise _Damaged("no checksum file: its write never finished, or an older rlkit wrote it") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise _Damaged(f"unreadable checksum file {_sums_path(path).name}") from None
    try:
        data = path.read_bytes()
    except OSError as err:
        raise _Damaged(f"cannot read: {err.strerror}") from None
    if len(data) != size:
        raise _Damaged(f"truncated: {len(data)} of {size} bytes")
    if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), digest):
        raise _Damaged("corrupt: its sha256 does not match")
    return data


def _verified_env(payload: dict[str, Any], path: Path, notes: list[str]) -> list[bytes | None] | None:
    blobs, mac = payload.get("env_states"), payload.get("env_hmac")
    if not isinstance(blobs, list) or not all(b is None or isinstance(b, bytes) for b in blobs):
        return None
    if all(b is None for b in blobs):
        return None
    key = _read_key()
    if key is not None and isinstance(mac, str) and hmac.compare_digest(mac, _env_mac(key, blobs)):
        return blobs
    notes.append(f"{path.name}: environment state not signed with your key ({paths.checkpoint_key_file()}),"
                 " so it is not loaded: resuming with fresh environments")
    return None


def _env_mac(key: bytes, blobs: list[bytes | None]) -> str:
    mac = hmac.new(key, b"rlkit env state v1", hashlib.sha256)
    for blob in blobs:
        # Length-prefixed, so no two lists of blobs sign alike.
        mac.update(b"\xff" * 8 if blob is None else len(blob).to_bytes(8, "big"))
        mac.update(blob or b"")
    return mac.hexdigest()


KEY_BYTES = 32


def _read_key() -> bytes | None:
    """This user's key; None when it is missing or too short to sign with
    (an empty key would let anyone forge the HMAC: env state is then skipped)."""
    try:
        key = paths.checkpoint_key_file().read_bytes()
    except FileNotFoundError:
        return None
    return key if len(key) >= KEY_BYTES else None


def _signing_key() -> bytes:
    """This user's key, made on first use (0600, in a 0700 directory)."""
    key = _read_key()
    if key is not None:
        return key
    path = paths.checkpoint_key_file()
    paths.private_dir(path.parent)
    # Written whole under a temporary name (mkstemp: 0600), then linked into
    # place: runs starting together agree on one key and none reads half of one.
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint.key.", dir=path.parent)
    try:
        os.write(fd, secrets.token_bytes(KEY_BYTES))
        os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    return path.read_bytes()
