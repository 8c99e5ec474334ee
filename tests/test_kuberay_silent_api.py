"""``rlkit status`` keeps its deadline when a KubeRay cluster's API server
takes connections and never answers (a hung control plane, a black-holed
VPN): the row says so, and the command does not hang.

No stand-in is needed: a loopback socket that listens and never accepts is
exactly such a server, to kubectl (its TLS handshake never completes) and to
the Ray client (the proxied dashboard address goes to the same socket).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlkit.clusters import auth
from rlkit.clusters.records import ClusterRecord
from rlkit.clusters.registry import register
from tests.cli_helpers import run_rlkit


@pytest.fixture
def silent_port() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield server.getsockname()[1]


def test_status_answers_within_its_deadline_when_the_api_server_never_answers(silent_port: int, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "silent",
        "clusters": [{"name": "silent", "cluster": {"server": f"https://127.0.0.1:{silent_port}",
                                                   "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "silent", "context": {"cluster": "silent", "user": "u", "namespace": "default"}}],
    }))
    url = f"http://127.0.0.1:{silent_port}/api/v1/namespaces/default/services/quiet-head-svc:dashboard/proxy"
    register(ClusterRecord(
        "quiet", "kuberay", url, url, token_path=str(auth.create_token_file("quiet")),
        kube={"context": "silent", "namespace": "default", "kubeconfig": str(kubeconfig), "uid": "u-1"},
        auth_header="X-Ray-Authorization",
    ))
    # A hang would run into the subprocess timeout, far beyond --timeout 2 (kubectl alone would wait about a minute).
    result = run_rlkit("status", "--json", "--timeout", "2", timeout=30)
    assert "Traceback" not in result.stderr, result.stderr
    [row] = json.loads(result.stdout)["clusters"]
    assert row["name"] == "quiet" and row["state"] != "UP", row
    assert row["kube"] and row["kube"].get("error"), row
