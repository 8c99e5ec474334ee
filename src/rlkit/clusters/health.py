"""The one rule for UP: a cluster is up when it can take jobs."""

from __future__ import annotations

import time

from rlkit.clusters import auth, dashboard
from rlkit.clusters.records import ClusterRecord
from rlkit.errors import BadInputError


def check_takes_jobs(dashboard_url: str, token: str | None, timeout: float, header: str | None = None) -> str:
    """Return the Ray version if the cluster can take jobs, else raise
    ``DashboardError``. The dashboard alone is not enough: it keeps
    answering for a minute after the GCS died, and without the GCS no job
    starts. /api/gcs_healthz asks the GCS and fails within about a second
    when it is gone (HTTP 503), where job and node queries hang."""
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(0.05, deadline - time.monotonic())

    version = str(dashboard.get_json(dashboard_url, "/api/version", token, left(), header)["ray_version"])
    try:
        dashboard.get(dashboard_url, "/api/gcs_healthz", token, left(), header)
    except dashboard.DashboardError as err:
        if err.state != dashboard.UNREACHABLE:
            raise
        raise dashboard.DashboardError(
            dashboard.UNREACHABLE, f"the dashboard answers but the cluster's GCS does not ({err}): no job can start"
        ) from None
    return version


def record_takes_jobs(record: ClusterRecord, timeout: float) -> bool:
    """Whether the cluster rlkit launched as ``record`` can take jobs, with its own token."""
    try:
        check_takes_jobs(record.dashboard_url, auth.token_source(record.token_path).read(), timeout, record.auth_header)
    except (dashboard.DashboardError, BadInputError, KeyError, TypeError):
        return False
    return True
