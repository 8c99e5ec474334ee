"""Cross-process locks under ``$RLKIT_HOME/locks``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from filelock import FileLock, Timeout

from rlkit import paths
from rlkit.errors import WorkFailedError


@contextmanager
def hold(name: str, timeout: float, busy: str) -> Iterator[None]:
    """Hold the lock ``name``; after ``timeout`` seconds of waiting raise
    ``WorkFailedError(busy)``."""
    lock = FileLock(str(paths.private_dir(paths.locks_dir()) / f"{name}.lock"))
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise WorkFailedError(busy) from None
    try:
        yield
    finally:
        lock.release()


def cluster_lock(name: str, timeout: float) -> AbstractContextManager[None]:
    """The lock that launch and teardown of one cluster name hold."""
    return hold(f"cluster-{name}", timeout, f"{name}: another rlkit is launching or stopping it")
