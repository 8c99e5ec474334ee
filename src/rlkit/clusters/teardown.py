"""Stop what ``rlkit launch`` started, and forget it.

Only clusters with an rlkit record can be torn down: an entry written by
hand names a cluster someone else started, and rlkit leaves it alone. A
cluster that runs rlkit jobs is torn down only when forced, and then its
jobs are stopped first, so that Ray records them as STOPPED.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from rlkit import paths
from rlkit.clusters import locks, registry
from rlkit.clusters.parallel import run_parallel
from rlkit.clusters.providers import StopResult, provider_module
from rlkit.clusters.records import save_record
from rlkit.clusters.registry import Cluster
from rlkit.errors import BadInputError, RlkitError
from rlkit.jobs.listing import JobRecord, list_jobs
from rlkit.jobs.stop import stop_jobs

LOCK_TIMEOUT_S = 120.0


@dataclass
class TeardownItem:
    """One cluster to stop, the lines that say what stopping it ends, and
    the rlkit jobs it runs (stopped first)."""

    cluster: Cluster
    stops: list[str]
    jobs: list[JobRecord] = field(default_factory=list)


@dataclass
class TeardownResult:
    """``ok`` False with ``message`` saying why; ``already_gone`` when
    nothing ran any more (still a success)."""

    name: str
    ok: bool
    message: str
    already_gone: bool = False


def plan_teardown(names: list[str] | None = None, everything: bool = False, force: bool = False) -> list[TeardownItem]:
    """What ``teardown`` would stop, for the confirmation prompt. ``names``
    must be clusters rlkit launched; ``everything`` takes all of those.
    Clusters that run rlkit jobs raise ``BadInputError`` unless ``force``."""
    if everything == bool(names):
        raise BadInputError("name the clusters to tear down, or pass --all (not both)")
    if everything:
        clusters = [c for c in registry.list_clusters() if c.record is not None]
    else:
        clusters = registry.select_clusters(names)
        manual = [c for c in clusters if c.record is None]
        if manual:
            where = ", ".join(f"{c.name!r} (line {c.entry.line})" for c in manual if c.entry)
            raise BadInputError(
                f"rlkit did not launch {where} in {paths.address_file()}",
                "rlkit stops only what it started; stop it the way it was started",
            )
    running = _running_jobs(clusters)
    if running and not force:
        listed = "; ".join(f"{name} runs {', '.join(j.id for j in jobs)}" for name, jobs in running.items())
        raise BadInputError(
            f"rlkit jobs are running: {listed}",
            "pass --force to stop them with the cluster, or `rlkit stop ID...` first",
        )
    items = []
    for cluster in clusters:
        assert cluster.record is not None
        lines = [f"{cluster.record.provider} cluster at {cluster.dashboard_url}"]
        jobs = running.get(cluster.name, [])
        if jobs:
            lines.append(f"{len(jobs)} running rlkit job(s), stopped first: {', '.join(j.id for j in jobs)}")
        try:
            lines += provider_module(cluster.record).describe_stop(cluster.record)
        except RlkitError as err:
            # Reported again when its turn comes; the others still stop.
            lines.append(f"cannot be stopped: {err}")
        items.append(TeardownItem(cluster, lines, jobs))
    return items


def _running_jobs(clusters: list[Cluster]) -> dict[str, list[JobRecord]]:
    """rlkit's active jobs per cluster; a cluster that does not answer
    runs none that could be stopped."""
    live = [c for c in clusters if c.record and c.record.state != "stopped"]
    running: dict[str, list[JobRecord]] = {}
    for job in list_jobs(live).jobs:
        if job.active and job.submitted:
            running.setdefault(job.cluster, []).append(job)
    return running


def teardown(items: list[TeardownItem], keep_entry: bool = False) -> list[TeardownResult]:
    """Stop all items in parallel; one failure does not stop the others."""
    outcomes = run_parallel(lambda item: _teardown_one(item.cluster, keep_entry, item.jobs), items)
    results = []
    for item, outcome in zip(items, outcomes):
        if outcome.value is not None:
            results.append(outcome.value)
        elif isinstance(outcome.error, RlkitError):
            results.append(TeardownResult(item.cluster.name, False, str(outcome.error)))
        else:
            results.append(TeardownResult(item.cluster.name, False, f"unexpected error: {outcome.error!r}"))
    return results


def _teardown_one(cluster: Cluster, keep_entry: bool, jobs: list[JobRecord]) -> TeardownResult:
    # A job that cannot be stopped ends with its cluster all the same.
    jobs_note = "; ".join(f"job {r.id} {r.message}" for r in stop_jobs(jobs)) if jobs else ""
    with locks.cluster_lock(cluster.name, LOCK_TIMEOUT_S):
        # Read again under the lock: another rlkit may have torn it down.
        record = registry.reload_record(cluster.name)
        if record is None:
            return TeardownResult(cluster.name, True, "was already torn down", already_gone=True)
        cluster = replace(cluster, record=record)
        stopped: StopResult = provider_module(record).stop(record)
        if keep_entry:
            save_record(replace(record, state="stopped", pids=[], problem=None))
        else:
            registry.unregister(cluster)
    if stopped.already_gone:
        message = "was already stopped" + (f" ({stopped.note})" if stopped.note else "")
    else:
        message = f"stopped ({stopped.stopped} {stopped.unit})"
    message += "; entry kept" if keep_entry else "; entry removed"
    if jobs_note:
        message = f"{jobs_note}; {message}"
    return TeardownResult(cluster.name, True, message, already_gone=stopped.already_gone)
