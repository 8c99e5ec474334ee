"""Stop what ``rlkit launch`` started, and forget it: one cluster at a time.

Only clusters with an rlkit record can be torn down: an entry written by
hand names a cluster someone else started, and rlkit leaves it alone.
``rlkit.views.teardown`` adds the check for running jobs and stops them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from rlkit import paths
from rlkit.clusters import locks, registry
from rlkit.clusters.provider import provider_for
from rlkit.clusters.records import save_record
from rlkit.clusters.registry import Cluster
from rlkit.errors import BadInputError, RlkitError

LOCK_TIMEOUT_S = 120.0


@dataclass
class TeardownResult:
    """``ok`` False with ``message`` saying why; ``already_gone`` when
    nothing ran any more (still a success)."""

    name: str
    ok: bool
    message: str
    already_gone: bool = False


def launched_clusters(names: list[str] | None = None, everything: bool = False) -> list[Cluster]:
    """The clusters to tear down: ``names``, which must be clusters rlkit
    launched, or with ``everything`` all of those."""
    if everything == bool(names):
        raise BadInputError("name the clusters to tear down, or pass --all (not both)")
    if everything:
        return [c for c in registry.list_clusters() if c.record is not None]
    clusters = registry.select_clusters(names)
    manual = [c for c in clusters if c.record is None]
    if manual:
        where = ", ".join(f"{c.name!r} (line {c.entry.line})" for c in manual if c.entry)
        raise BadInputError(
            f"rlkit did not launch {where} in {paths.address_file()}",
            "rlkit stops only what it started; stop it the way it was started",
        )
    return clusters


def describe_stop(cluster: Cluster) -> list[str]:
    """What tearing ``cluster`` down ends, for the confirmation prompt."""
    assert cluster.record is not None
    lines = [f"{cluster.record.provider} cluster at {cluster.dashboard_url}"]
    try:
        lines += provider_for(cluster.record).describe_stop(cluster.record)
    except RlkitError as err:
        # Reported again when its turn comes; the others still stop.
        lines.append(f"cannot be stopped: {err}")
    return lines


def stop_and_forget(cluster: Cluster, keep_entry: bool) -> TeardownResult:
    """Stop the cluster through its provider and forget it (with
    ``keep_entry``, mark it stopped instead, for a relaunch at the same place)."""
    with locks.cluster_lock(cluster.name, LOCK_TIMEOUT_S):
        # Read again under the lock: another rlkit may have torn it down.
        record = registry.reload_record(cluster.name)
        if record is None:
            return TeardownResult(cluster.name, True, "was already torn down", already_gone=True)
        cluster = replace(cluster, record=record)
        stopped = provider_for(record).stop(record)
        if keep_entry:
            save_record(replace(record, state="stopped", pids=[], problem=None))
        else:
            registry.unregister(cluster)
    if stopped.already_gone:
        message = "was already stopped" + (f" ({stopped.note})" if stopped.note else "")
    else:
        message = f"stopped ({stopped.stopped} {stopped.unit})"
    message += "; entry kept" if keep_entry else "; entry removed"
    return TeardownResult(cluster.name, True, message, already_gone=stopped.already_gone)
