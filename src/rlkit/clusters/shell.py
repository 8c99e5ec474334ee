"""Shell exports that point Ray's own CLI and scripts at one cluster."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from rlkit import paths
from rlkit.clusters import auth, local
from rlkit.clusters.registry import Cluster
from rlkit.errors import BadInputError

# Headers (JSON) that Ray's job CLI sends with every request.
JOB_HEADERS_ENV = "RAY_JOB_HEADERS"


def ray_environment(cluster: Cluster) -> dict[str, str | None]:
    """Variables to set (None: to unset) so that Ray's CLI and scripts reach
    ``cluster`` with its token: ``ray job`` takes the dashboard from
    ``RAY_API_SERVER_ADDRESS``; ``ray.init()`` and ``ray status`` take the
    GCS from ``RAY_ADDRESS`` (and refuse a dashboard URL there)."""
    if cluster.auth_header:
        return _header_env(cluster)
    env: dict[str, str | None] = {"RAY_ADDRESS": cluster.ray_address, "RAY_API_SERVER_ADDRESS": cluster.dashboard_url}
    if os.environ.get(JOB_HEADERS_ENV, "").startswith('{"X-Ray-Authorization"'):
        # A KubeRay cluster's token, exported by an earlier `rlkit env`, goes to its own cluster only.
        env[JOB_HEADERS_ENV] = None
    env.update(_token_env(cluster))
    env.update(_loopback_env(cluster))
    return env


def _header_env(cluster: Cluster) -> dict[str, str | None]:
    """A cluster behind a proxy that owns Authorization (KubeRay's kubectl
    proxy): ``ray job`` takes the dashboard address and the token's header
    from ``RAY_JOB_HEADERS``, and token mode must be off in this shell, or
    Ray's client would add an Authorization header of its own. Only the Job
    API is reachable: no GCS address is exported."""
    token = auth.token_source(cluster.record.token_path if cluster.record else None).read()
    headers = json.dumps(auth.auth_headers(token, cluster.auth_header))
    return {"RAY_ADDRESS": cluster.dashboard_url, "RAY_API_SERVER_ADDRESS": cluster.dashboard_url,
            JOB_HEADERS_ENV: headers, auth.MODE_ENV: None, auth.TOKEN_PATH_ENV: None, auth.TOKEN_ENV: None,
            **{k: None for k, v in local.LOOPBACK_ENV.items() if os.environ.get(k) == v}}


def _token_env(cluster: Cluster) -> dict[str, str | None]:
    token_path = cluster.record.token_path if cluster.record else None
    if token_path:
        if not Path(token_path).is_file():
            raise BadInputError(f"{cluster.name}: token file {token_path} is missing", "relaunch the cluster")
        return auth.ray_env(token_path)
    # No token of rlkit's: undo one that an earlier `rlkit env` exported,
    # and leave a user's own Ray token settings alone.
    current = os.environ.get(auth.TOKEN_PATH_ENV)
    if current and Path(current).parent == paths.tokens_dir():
        return {auth.TOKEN_PATH_ENV: None, auth.MODE_ENV: None}
    return {}


def _loopback_env(cluster: Cluster) -> dict[str, str | None]:
    """A local cluster listens on loopback alone, and a Ray client turns
    127.0.0.1 into the machine's address unless it runs in Ray's
    single-machine mode too; for another cluster, undo what an earlier
    `rlkit env` exported."""
    record = cluster.record
    if record and record.provider == local.NAME and record.gcs_address and local.on_loopback(record.gcs_address):
        return dict(local.LOOPBACK_ENV)
    return {k: None for k, v in local.LOOPBACK_ENV.items() if os.environ.get(k) == v}


def export_lines(env: dict[str, str | None]) -> str:
    """POSIX shell lines for ``eval "$(rlkit env NAME)"``."""
    lines = [f"export {k}={shlex.quote(v)}" if v is not None else f"unset {k}" for k, v in env.items()]
    return "\n".join(lines) + "\n"
