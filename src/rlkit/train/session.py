"""The Ray connection of a training run: embedded local Ray, or a cluster."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def ray_session(address: str | None) -> Iterator[bool]:
    """Connect to ``address`` (or RAY_ADDRESS, as inside a Ray job) or start Ray locally.

    Yields whether Ray was embedded. Ray that was already initialised (a Tune
    trial, a caller's session) is used as it is and left running.
    """
    import ray

    if ray.is_initialized():
        yield False
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
    else:
        # "local" forces a new embedded instance even if another cluster runs on this host.
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
                 logging_level=logging.ERROR, log_to_driver=False, configure_logging=True)
    try:
        yield not address
    finally:
        ray.shutdown()
