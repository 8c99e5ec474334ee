"""The clusters section of ``rlkit status``: every cluster probed in parallel, briefly.

``rlkit.views.status`` joins it with the jobs and sweeps sections.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from rlkit.clusters import dashboard, health
from rlkit.clusters.parallel import run_parallel
from rlkit.clusters.registry import Cluster
from rlkit.errors import BadInputError

UP = "UP"
STARTING = "STARTING"
STOPPED = "STOPPED"
BROKEN = "BROKEN"
DEFAULT_TIMEOUT_S = 3.0


@dataclass
class ClusterStatus:
    """One row of the clusters table. ``state`` is UP, UNREACHABLE,
    AUTH-FAILED, WRONG-PORT, or STARTING / STOPPED for a cluster that rlkit
    is launching / tore down with ``--keep-entry``, or BROKEN when rlkit's
    record of it is unreadable; ``detail`` says why in
    one line.
    Numbers are None when the cluster did not say. ``input_error`` is True
    when what is wrong lies on this side: the address or a token file."""

    name: str
    provider: str
    address: str
    dashboard_url: str
    state: str
    detail: str = ""
    nodes_alive: int | None = None
    cpus_used: float | None = None
    cpus_total: float | None = None
    gpus_used: float | None = None
    gpus_total: float | None = None
    ray_version: str | None = None
    token_auth: bool | None = None
    warning: str | None = None
    input_error: bool = False
    # KubeRay: what Kubernetes says (pods ready/desired, the RayCluster's
    # condition), beside the Ray view above.
    kube: dict[str, Any] | None = None

    @property
    def is_up(self) -> bool:
        return self.state == UP


def probe(cluster: Cluster, timeout: float = DEFAULT_TIMEOUT_S) -> ClusterStatus:
    """Ask one cluster's dashboard who it is and what it holds, within
    ``timeout`` seconds in all."""
    status = ClusterStatus(
        cluster.name, cluster.provider, cluster.address, cluster.dashboard_url,
        state=dashboard.UNREACHABLE, warning=cluster.port_warning(),
    )
    if cluster.record and cluster.record.state == "broken":
        status.state, status.input_error = BROKEN, True
        status.detail = cluster.record.problem or "rlkit's record is unreadable"
        return status
    if cluster.record and cluster.record.state == "stopped":
        status.state = STOPPED
        status.detail = f"torn down with --keep-entry; `rlkit launch {cluster.provider} --name {cluster.name}` starts it again"
        return status
    if cluster.reconnect_error:
        status.detail = cluster.reconnect_error
        return status
    if cluster.record and not cluster.dashboard_url:
        # A KubeRay launch has no address until its RayCluster is ready.
        starting = cluster.record.state == "starting"
        status.state = STARTING if starting else dashboard.UNREACHABLE
        status.detail = ("rlkit is launching it" if starting else
                         f"its launch failed and was kept; `rlkit teardown {cluster.name}` deletes it")
        return status
    deadline = time.monotonic() + timeout

    def get(path: str, token: str | None) -> Any:
        return dashboard.get_json(cluster.dashboard_url, path, token, max(0.05, deadline - time.monotonic()),
                                  cluster.auth_header)

    def optional(path: str, token: str | None) -> Any:
        """Details of a cluster that is UP: one that fails leaves a blank."""
        try:
            return get(path, token)
        except dashboard.DashboardError:
            return None

    try:
        token = cluster.token.read()
        status.ray_version = health.check_takes_jobs(cluster.dashboard_url, token, max(0.05, deadline - time.monotonic()),
                                                     cluster.auth_header)
    except BadInputError as err:
        status.state, status.detail, status.input_error = dashboard.AUTH_FAILED, err.message, True
    except dashboard.DashboardError as err:
        status.state, status.detail = err.state, _explain(cluster, err)
        status.input_error = err.state == dashboard.WRONG_PORT
    except (KeyError, TypeError):
        status.state, status.input_error = dashboard.WRONG_PORT, True
        status.detail = f"{cluster.dashboard_url} answers JSON, but not as a Ray dashboard does"
    else:
        status.state = UP
        _add_details(status, optional("/api/authentication_mode", None),
                     optional("/api/v0/nodes?limit=10000", token), optional("/api/cluster_status", token))
    if status.state != UP and cluster.record and cluster.record.state == "starting":
        status.state, status.detail = STARTING, "rlkit is launching it"
    return status


def _explain(cluster: Cluster, err: dashboard.DashboardError) -> str:
    text = str(err)
    if err.state == dashboard.AUTH_FAILED:
        text += f" ({cluster.describe_token()})"
    elif cluster.entry and cluster.entry.parsed.scheme in ("gcs", "ray") and not cluster.record:
        text += f" (the dashboard of {cluster.address} is assumed at port 8265: write its http:// address if it is elsewhere)"
    return text


def _add_details(status: ClusterStatus, mode: Any, nodes: Any, cluster_status: Any) -> None:
    """Fill in what the dashboard told; a reply of an unexpected shape (an
    older or newer Ray) leaves its fields blank rather than failing."""
    try:
        if mode is not None:
            status.token_auth = mode["authentication_mode"] == "token"
        if nodes is not None:
            alive = [n for n in nodes["data"]["result"]["result"] if n["state"] == "ALIVE"]
            status.nodes_alive = len(alive)
            status.cpus_total = sum(n["resources_total"].get("CPU", 0.0) for n in alive)
            status.gpus_total = sum(n["resources_total"].get("GPU", 0.0) for n in alive)
        # Usage comes from the autoscaler's report, which a fresh head
        # publishes a few seconds after it starts.
        usage = ((cluster_status or {}).get("data") or {}).get("clusterStatus") or {}
        usage = (usage.get("loadMetricsReport") or {}).get("usage")
        if usage:
            status.cpus_used = float(usage.get("CPU", [0.0])[0])
            status.gpus_used = float(usage.get("GPU", [0.0])[0])
    except (KeyError, TypeError, AttributeError, IndexError, ValueError):
        pass


def cluster_statuses(clusters: list[Cluster], timeout: float = DEFAULT_TIMEOUT_S) -> list[ClusterStatus]:
    """Probe all clusters at once (and the API servers of KubeRay ones, at
    the same time): the whole call takes about ``timeout`` however many
    clusters there are and whichever of them hang."""
    kube = [c for c in clusters if c.record and c.record.provider == "kuberay" and c.record.kube]
    calls: list[Callable[[], Any]] = [(lambda c=c: probe(c, timeout)) for c in clusters]
    calls += [(lambda c=c: _kube_view(c, timeout)) for c in kube]
    outcomes = run_parallel(lambda call: call(), calls, timeout=timeout + 1.0)
    views = {c.name: o.value for c, o in zip(kube, outcomes[len(clusters):])}
    statuses = []
    for cluster, outcome in zip(clusters, outcomes):
        if outcome.value is not None:
            outcome.value.kube = views.get(cluster.name) or ({"error": f"no answer within {timeout:.1f} s"}
                                                              if cluster in kube else None)
            statuses.append(outcome.value)
            continue
        detail = f"no answer within {timeout:.1f} s" if outcome.error is None else f"probe failed: {outcome.error}"
        statuses.append(ClusterStatus(
            cluster.name, cluster.provider, cluster.address, cluster.dashboard_url,
            state=dashboard.UNREACHABLE, detail=detail,
        ))
    return statuses


def _kube_view(cluster: Cluster, timeout: float) -> dict[str, Any]:
    from rlkit.clusters import kuberay

    assert cluster.record is not None
    view = kuberay.kube_view(cluster.record, timeout)
    return {**asdict(view), "summary": view.describe()}
