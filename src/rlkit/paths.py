"""Where rlkit keeps its files (every layer needs them); environment variables move them (tests do)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from rlkit.errors import BadInputError

ADDRESS_FILE_ENV = "RLKIT_RAY_ADDRESS_FILE"
HOME_ENV = "RLKIT_HOME"
RUNS_DIR_ENV = "RLKIT_RUNS_DIR"
# Set in a submitted job's environment: the run records which cluster it ran on.
CLUSTER_ENV = "RLKIT_CLUSTER"


def address_file() -> Path:
    """The multi-cluster address list that Ray users keep: ``~/.ray_address``."""
    override = os.environ.get(ADDRESS_FILE_ENV)
    return Path(override).expanduser() if override else Path.home() / ".ray_address"


def rlkit_home() -> Path:
    """rlkit's own state directory: ``$RLKIT_HOME`` or ``~/.rlkit``."""
    override = os.environ.get(HOME_ENV)
    home = Path(override).expanduser() if override else Path.home() / ".rlkit"
    return check_dir(home, f"{HOME_ENV} " if override else "")


def runs_dir() -> str:
    """Where run directories go unless a config says otherwise: ``$RLKIT_RUNS_DIR``
    (jobs and sweeps set it) or ``runs`` in the working directory."""
    return os.environ.get(RUNS_DIR_ENV, "runs")


def check_dir(path: Path, what: str = "") -> Path:
    """``path`` if it is a directory or can become one (what exists of it is directories)."""
    for existing in (path, *path.parents):
        if existing.exists():
            if not existing.is_dir():
                where = str(path) if existing == path else f"{path}: {existing}"
                raise BadInputError(f"{what}{where} is not a directory", "move the file away or choose another path")
            break
    return path


def cluster_template(name: str) -> Path:
    """A cluster template that ships with rlkit (``rlkit/cluster_configs/NAME``,
    package data): found in a wheel install as in a source checkout."""
    # rlkit is installed as files (a wheel unpacks, and so do Ray's
    # py_modules), so the resource is a path on disk that messages can name.
    return Path(str(resources.files("rlkit") / "cluster_configs" / name))


def clusters_dir() -> Path:
    """One JSON record per cluster that rlkit launched."""
    return rlkit_home() / "clusters"


def tokens_dir() -> Path:
    """Per-cluster auth tokens, each file readable by its owner only."""
    return rlkit_home() / "tokens"


def checkpoint_key_file() -> Path:
    """The key that signs this user's checkpointed environment state (mode 0600)."""
    return rlkit_home() / "checkpoint.key"


def locks_dir() -> Path:
    return rlkit_home() / "locks"


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) so that only the owner can enter it."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as err:
        raise BadInputError(f"cannot create {path}: {err.strerror}", f"check {HOME_ENV} and its permissions") from None
    return path
