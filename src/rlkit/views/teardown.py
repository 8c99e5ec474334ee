"""What ``rlkit teardown`` plans and does: the clusters, and the rlkit jobs
they run. A cluster that runs rlkit jobs is torn down only when forced, and
then its jobs are stopped first, so that Ray records them as STOPPED.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from rlkit.clusters import teardown as clusters_teardown
from rlkit.clusters.parallel import run_parallel
from rlkit.clusters.registry import Cluster
from rlkit.clusters.teardown import TeardownResult
from rlkit.errors import BadInputError, RlkitError
from rlkit.jobs.listing import JobRecord, list_jobs
from rlkit.jobs.stop import stop_jobs


@dataclass
class TeardownItem:
    """One cluster to stop, the lines that say what stopping it ends, and
    the rlkit jobs it runs (stopped first)."""

    cluster: Cluster
    stops: list[str]
    jobs: list[JobRecord] = field(default_factory=list)


def plan_teardown(names: list[str] | None = None, everything: bool = False, force: bool = False) -> list[TeardownItem]:
    """What ``teardown`` would stop, for the confirmation prompt. ``names``
    must be clusters rlkit launched; ``everything`` takes all of those.
    Clusters that run rlkit jobs raise ``BadInputError`` unless ``force``."""
    clusters = clusters_teardown.launched_clusters(names, everything)
    running = _running_jobs(clusters)
    if running and not force:
        listed = "; ".join(f"{name} runs {', '.join(j.id for j in jobs)}" for name, jobs in running.items())
        raise BadInputError(
            f"rlkit jobs are running: {listed}",
            "pass --force to stop them with the cluster, or `rlkit stop ID...` first",
        )
    items = []
    for cluster in clusters:
        lines = clusters_teardown.describe_stop(cluster)
        jobs = running.get(cluster.name, [])
        if jobs:
            lines.insert(1, f"{len(jobs)} running rlkit job(s), stopped first: {', '.join(j.id for j in jobs)}")
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
    outcomes = run_parallel(lambda item: _teardown_one(item, keep_entry), items)
    results = []
    for item, outcome in zip(items, outcomes):
        if outcome.value is not None:
            results.append(outcome.value)
        elif isinstance(outcome.error, RlkitError):
            results.append(TeardownResult(item.cluster.name, False, str(outcome.error)))
        else:
            results.append(TeardownResult(item.cluster.name, False, f"unexpected error: {outcome.error!r}"))
    return results


def _teardown_one(item: TeardownItem, keep_entry: bool) -> TeardownResult:
    # A job that cannot be stopped ends with its cluster all the same.
    jobs_note = "; ".join(f"job {r.id} {r.message}" for r in stop_jobs(item.jobs)) if item.jobs else ""
    result = clusters_teardown.stop_and_forget(item.cluster, keep_entry)
    return replace(result, message=f"{jobs_note}; {result.message}") if jobs_note else result
