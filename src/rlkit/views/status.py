"""What ``rlkit status`` shows: the clusters, the jobs of those that are up,
and the sweeps, one section each, each a list of records."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from rlkit.clusters.registry import select_clusters
from rlkit.clusters.status import DEFAULT_TIMEOUT_S, ClusterStatus, cluster_statuses
from rlkit.jobs.listing import JobRecord, list_jobs
from rlkit.sweep.records import SweepStatus, sweep_statuses


@dataclass
class StatusReport:
    """Everything ``rlkit status`` prints, section by section. ``job_errors``
    names the clusters that are UP but did not list their jobs, and why."""

    clusters: list[ClusterStatus] = field(default_factory=list)
    jobs: list[JobRecord] = field(default_factory=list)
    job_errors: dict[str, str] = field(default_factory=dict)
    sweeps: list[SweepStatus] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"clusters": [asdict(c) for c in self.clusters], "jobs": [asdict(j) for j in self.jobs],
                "job_errors": self.job_errors, "sweeps": [asdict(s) for s in self.sweeps]}


def collect_status(names: Iterable[str] | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                   all_jobs: bool = False) -> StatusReport:
    """The status of the named clusters (all when ``names`` is None) and
    the jobs of those that are up: rlkit's, or all with ``all_jobs``."""
    clusters = select_clusters(names)
    statuses = cluster_statuses(clusters, timeout)
    up = [c for c, s in zip(clusters, statuses) if s.is_up]
    jobs = list_jobs(up, all_jobs=all_jobs, timeout=timeout)
    return StatusReport(clusters=statuses, jobs=jobs.jobs, job_errors=jobs.errors, sweeps=_sweeps(names, jobs.jobs))


def _sweeps(names: Iterable[str] | None, jobs: list[JobRecord]) -> list[SweepStatus]:
    """The sweeps rlkit knows of (on the named clusters only, when named);
    read from their directories, and from their jobs where those are remote."""
    return sweep_statuses(None if names is None else list(names), {j.id: j.status for j in jobs})
