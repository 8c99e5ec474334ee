"""The Ray connection of a training run: embedded local Ray, or a cluster."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager


def prepare_process(address: str | None) -> None:
    """Call before Ray is imported (it reads the setting then): a run that
    embeds Ray, or drives a cluster on loopback (rlkit's local clusters
    listen there alone), uses Ray's single-machine mode, in which every
    port of an embedded Ray listens on 127.0.0.1 and a driver keeps a
    loopback address rather than swapping in this host's. A driver of a
    remote cluster must not: that cluster's workers call back to it."""
    from rlkit.clusters.local import LOOPBACK_ENV, on_loopback

    target = address or os.environ.get("RAY_ADDRESS")
    if target is None or on_loopback(target):
        os.environ.update(LOOPBACK_ENV)


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
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        else:
            with _marked_for_reaper(), _without_unused_head_processes():
                # "local" forces a new embedded instance even if another cluster runs on this host.
                ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
                         logging_level=logging.ERROR, log_to_driver=False, configure_logging=True)
        yield not address
    finally:
        # Also after Ctrl-C in the middle of ray.init: what it started stops.
        ray.shutdown()


# What an embedded Ray starts besides GCS, the raylet and the raylet's agents,
# and what no run or sweep of rlkit uses: the dashboard's API server (started
# even with include_dashboard=False, to report usage statistics, and awaited
# before the raylet may start), the autoscaler's monitor (one fixed node: there
# is nothing to scale) and the log monitor (log_to_driver=False: actors' logs
# stay in their files). Skipping them takes about 2 s off every start-up on 2
# cores and a third of Ray's processes off every shutdown (scripts/bench/README.md,
# "Start-up"). Ray offers no switch for them, so ray.init runs with the three
# methods of its Node class that start them set to do nothing;
# tests/test_embedded_ray_cleanup.py checks that they stay off.
#
# The raylet's dashboard agent runs as it does in Ray's minimal install (the
# check for the dashboard's optional packages answers "missing"): without
# its metrics, HTTP and gRPC servers, which only the dashboard reads. The
# raylet registers only once its agents are up, so that agent's start-up is
# on every run's critical path; minimal, it costs about 0.6 s less CPU, the
# driver skips importing the packages to check (0.4-0.8 s), and it opens no
# port at all.
_UNUSED_HEAD_PROCESSES = ("start_api_server", "start_monitor", "start_log_monitor")


@contextmanager
def _without_unused_head_processes() -> Iterator[None]:
    import ray._private.utils as ray_utils
    from ray._private.node import Node

    saved = {name: Node.__dict__[name] for name in _UNUSED_HEAD_PROCESSES}
    for name in _UNUSED_HEAD_PROCESSES:
        setattr(Node, name, lambda *_args, **_kwargs: None)
    dependency_check = ray_utils.get_dashboard_dependency_error
    ray_utils.get_dashboard_dependency_error = lambda: ImportError("rlkit: the embedded Ray runs a minimal agent")
    try:
        yield
    finally:
        ray_utils.get_dashboard_dependency_error = dependency_check
        for name, method in saved.items():
            setattr(Node, name, method)


@contextmanager
def _marked_for_reaper() -> Iterator[None]:
    """Every process that Ray starts in here carries a marker that a
    watchdog uses to stop them once this process is gone, however it ends
    (``rlkit.clusters.reaper``)."""
    from rlkit.clusters import procs, reaper

    before = os.environ.get(procs.MARKER_ENV)
    os.environ[procs.MARKER_ENV] = reaper.start_for_this_process()
    try:
        yield
    finally:
        if before is None:
            del os.environ[procs.MARKER_ENV]
        else:
            os.environ[procs.MARKER_ENV] = before
