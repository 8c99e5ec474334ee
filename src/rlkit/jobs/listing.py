"""The jobs on the clusters, as each dashboard's Job API lists them
(``GET /api/jobs/``), asked in parallel with a deadline like ``rlkit status``.

rlkit's jobs are those whose metadata carries the ``rlkit`` key; jobs sent
with Ray's own CLI or SDK are listed too when asked for all jobs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from rlkit.clusters import dashboard
from rlkit.clusters.parallel import run_parallel
from rlkit.clusters.registry import Cluster, select_clusters
from rlkit.errors import BadInputError, RlkitError
from rlkit.jobs.client import token_of

# Metadata keys that rlkit sets on the jobs it submits (values are text).
TAG = "rlkit"
META_NAME = "rlkit.name"
META_CLUSTER = "rlkit.cluster"
META_RUNS_DIR = "rlkit.runs_dir"
META_CONFIG = "rlkit.config"

ACTIVE = ("PENDING", "RUNNING")
DEFAULT_TIMEOUT_S = 3.0


@dataclass
class JobRecord:
    """One job on one cluster. ``id`` is the submission id, or the job id of
    a driver that was run on the cluster directly (``submitted`` False: it
    has no logs or stop in the Job API). Times are seconds since the epoch;
    ``duration_s`` runs to now while the job is active. ``driver_node_id``:
    the Ray node where its entrypoint ran (its run directory is there)."""

    cluster: str
    id: str
    name: str
    status: str
    entrypoint: str
    submitted: bool
    rlkit: bool
    start_time: float | None = None
    end_time: float | None = None
    duration_s: float | None = None
    runs_dir: str | None = None
    driver_node_id: str | None = None
    message: str = ""

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


@dataclass
class JobListing:
    """Jobs of every cluster that answered; ``errors`` says, per cluster
    that did not, why its jobs are missing."""

    jobs: list[JobRecord] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def list_jobs(
    clusters: list[Cluster] | None = None, all_jobs: bool = False, timeout: float = DEFAULT_TIMEOUT_S
) -> JobListing:
    """The jobs of ``clusters`` (all registered ones for None): rlkit's
    only, unless ``all_jobs``. Takes about ``timeout`` at most."""
    clusters = select_clusters() if clusters is None else clusters
    outcomes = run_parallel(lambda c: _cluster_jobs(c, timeout), clusters, timeout=timeout + 1.0)
    listing = JobListing()
    for cluster, outcome in zip(clusters, outcomes):
        if outcome.value is not None:
            listing.jobs += [j for j in outcome.value if all_jobs or j.rlkit]
        elif isinstance(outcome.error, (RlkitError, dashboard.DashboardError)):
            listing.errors[cluster.name] = str(outcome.error).removeprefix(f"{cluster.name}: ")
        elif outcome.error is not None:
            listing.errors[cluster.name] = f"listing its jobs failed: {outcome.error!r}"
        else:
            listing.errors[cluster.name] = f"no answer within {timeout:.1f} s"
    return listing


def _cluster_jobs(cluster: Cluster, timeout: float) -> list[JobRecord]:
    data = dashboard.get_json(cluster.dashboard_url, "/api/jobs/", token_of(cluster), timeout, cluster.auth_header)
    try:
        jobs = [_record(cluster.name, item) for item in data]
    except (KeyError, TypeError, AttributeError, ValueError):
        raise BadInputError(f"{cluster.dashboard_url} lists jobs in a shape rlkit does not know") from None
    return sorted(jobs, key=lambda j: j.start_time or 0.0)


def _record(cluster: str, item: dict[str, Any]) -> JobRecord:
    metadata = item.get("metadata") or {}
    submission_id = item.get("submission_id")
    job_id = submission_id or item["job_id"]
    start = item["start_time"] / 1000 if item.get("start_time") else None
    end = item["end_time"] / 1000 if item.get("end_time") else None
    status = str(item["status"])
    until = end or (time.time() if status in ACTIVE else None)
    duration = round(until - start, 1) if start and until else None
    return JobRecord(
        cluster=cluster, id=job_id, name=metadata.get(META_NAME, job_id), status=status,
        entrypoint=item.get("entrypoint") or "", submitted=submission_id is not None, rlkit=TAG in metadata,
        start_time=start, end_time=end, duration_s=duration, runs_dir=metadata.get(META_RUNS_DIR),
        driver_node_id=item.get("driver_node_id"), message=item.get("message") or "",
    )


def find_jobs(ids: list[str], clusters: list[Cluster] | None = None,
              timeout: float = DEFAULT_TIMEOUT_S) -> list[JobRecord]:
    """The submitted job of each submission id, wherever it runs: every
    cluster (or those given) is asked at once. An id found nowhere, or on
    several clusters, raises ``BadInputError``."""
    clusters = select_clusters() if clusters is None else clusters
    listing = list_jobs(clusters, all_jobs=True, timeout=timeout)
    found = []
    for job_id in dict.fromkeys(ids):
        matches = [j for j in listing.jobs if j.submitted and j.id == job_id]
        if len(matches) > 1:
            where = ", ".join(j.cluster for j in matches)
            raise BadInputError(f"job {job_id} exists on {where}", "name one with --cluster")
        if not matches:
            asked = ", ".join(c.name for c in clusters if c.name not in listing.errors) or "none"
            missed = "; ".join(f"{name}: {why}" for name, why in listing.errors.items())
            hint = f"not asked: {missed}" if missed else "`rlkit status --all-jobs` lists the jobs"
            raise BadInputError(f"no submitted job {job_id} on the clusters that answered ({asked})", hint)
        found.append(matches[0])
    return found


def job_path(job_id: str, suffix: str = "") -> str:
    """The Job API path of one job (ids are quoted: they come from users)."""
    return f"/api/jobs/{quote(job_id, safe='')}{suffix}"
