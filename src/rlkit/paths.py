"""Where rlkit keeps its files (every layer needs them); environment variables move them (tests do)."""

from __future__ import annotations

import os
from pathlib import Path

ADDRESS_FILE_ENV = "RLKIT_RAY_ADDRESS_FILE"
HOME_ENV = "RLKIT_HOME"


def address_file() -> Path:
    """The multi-cluster address list that Ray users keep: ``~/.ray_address``."""
    override = os.environ.get(ADDRESS_FILE_ENV)
    return Path(override).expanduser() if override else Path.home() / ".ray_address"


def rlkit_home() -> Path:
    """rlkit's own state directory: ``$RLKIT_HOME`` or ``~/.rlkit``."""
    override = os.environ.get(HOME_ENV)
    return Path(override).expanduser() if override else Path.home() / ".rlkit"


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
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
