"""Ray's JobSubmissionClient for one named cluster: its token in the
headers, no redirect followed, and never another cluster's address from
the environment."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rlkit.clusters import dashboard
from rlkit.clusters.auth import auth_headers
from rlkit.clusters.registry import Cluster
from rlkit.errors import BadInputError, RlkitError, WorkFailedError

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

# Ray's client takes its address from these over the one it is given.
_REDIRECTS = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
_env_lock = threading.Lock()
_env_users = 0
_hidden: dict[str, str] = {}


@contextmanager
def _named_address_only() -> Iterator[None]:
    """Hide RAY_ADDRESS and RAY_API_SERVER_ADDRESS while clients are built:
    a variable left in the shell must not send a job, and the token with
    it, to another cluster. Counted, so that clients built at the same
    time in several threads restore the variables once, after the last."""
    global _env_users
    with _env_lock:
        if _env_users == 0:
            _hidden.update({k: os.environ.pop(k) for k in _REDIRECTS if k in os.environ})
        _env_users += 1
    try:
        yield
    finally:
        with _env_lock:
            _env_users -= 1
            if _env_users == 0:
                os.environ.update(_hidden)
                _hidden.clear()


def token_of(cluster: Cluster) -> str | None:
    """The cluster's token, or a ``BadInputError`` naming the cluster."""
    try:
        return cluster.token.read()
    except BadInputError as err:
        raise BadInputError(f"{cluster.name}: {err.message}", err.hint) from None


def check_usable(cluster: Cluster) -> None:
    """What the registry knows already: a cluster torn down with
    ``--keep-entry`` (its token is gone with it), or whose SSH tunnel could
    not be opened again."""
    if cluster.record and cluster.record.state == "stopped":
        raise WorkFailedError(
            f"{cluster.name}: stopped (torn down with --keep-entry)",
            f"`rlkit launch {cluster.provider} --name {cluster.name}` starts it again",
        )
    if cluster.reconnect_error:
        raise WorkFailedError(f"{cluster.name}: {cluster.reconnect_error}")


def check_reachable(cluster: Cluster, token: str | None, timeout: float) -> None:
    """Fail fast, in the words ``rlkit status`` uses, when the cluster is
    down or refuses the token."""
    try:
        dashboard.get_json(cluster.dashboard_url, "/api/version", token, timeout, cluster.auth_header)
    except dashboard.DashboardError as err:
        detail = f" ({cluster.describe_token()})" if err.state == dashboard.AUTH_FAILED else ""
        error = BadInputError if err.state == dashboard.WRONG_PORT else WorkFailedError
        raise error(f"{cluster.name}: {err}{detail}") from None


def connect(cluster: Cluster, timeout: float = 10.0) -> JobSubmissionClient:
    """A client for ``cluster``'s Job Submission API, after a quick check
    that the cluster answers."""
    from rlkit.jobs.ray_client import ScopedJobClient

    check_usable(cluster)
    token = token_of(cluster)
    check_reachable(cluster, token, timeout)
    with _named_address_only():
        try:
            return ScopedJobClient(cluster.dashboard_url, auth_headers(token, cluster.auth_header))
        except Exception as err:  # noqa: BLE001 - Ray raises plain exceptions of many kinds
            raise WorkFailedError(f"{cluster.name}: {one_line(err)}") from None


def quiet_client_logs() -> None:
    """For command lines: Ray's job client logs each package it makes and
    uploads, and each log stream it closes, at INFO."""
    import logging

    # Ray sets these levels when its modules are imported: import first.
    import ray.job_submission  # noqa: F401

    for name in ("ray", "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk"):
        logging.getLogger(name).setLevel(logging.WARNING)


def one_line(err: BaseException) -> str:
    """Ray's errors can carry a server traceback: keep its last line."""
    if isinstance(err, RlkitError):
        return str(err)
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[-1] if lines else type(err).__name__
    return text.rstrip(".")
