"""The stand-in Kubernetes API server and KubeRay operator, driven by real
kubectl: what rlkit's KubeRay tests rely on it to check and to run."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube.fixture import KubeStandin

IMAGE = "rayproject/ray:2.52.0"
CLUSTER = "standin-a"
CLIENTS = ("1.27", "1.33")


def raycluster(name: str, workers: int = 0, image: str = IMAGE, labels: dict[str, str] | None = None) -> dict[str, Any]:
    def pod(container: str) -> dict[str, Any]:
        return {"spec": {"containers": [{"name": container, "image": image,
                                         "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}}

    spec: dict[str, Any] = {"authOptions": {"mode": "token"},
                            "headGroupSpec": {"rayStartParams": {"num-cpus": "0"}, "template": pod("ray-head")}}
    if workers:
        spec["workerGroupSpecs"] = [{"groupName": "cpu", "replicas": workers, "minReplicas": 0, "maxReplicas": 4,
                                     "template": pod("ray-worker")}]
    return {"apiVersion": "ray.io/v1", "kind": "RayCluster",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "rlkit", **(labels or {})}},
            "spec": spec}


def write(directory: Path, *objects: dict[str, Any]) -> Path:
    path = directory / f"manifest-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    return path


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.fixture(scope="module")
def cluster(kube: KubeStandin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real Ray cluster for the module: a head and one 1-CPU worker."""
    path = write(tmp_path_factory.mktemp("manifests"), raycluster(CLUSTER, workers=1))
    applied = kube.kubectl("apply", "--server-side", "--field-manager=rlkit", "-f", str(path))
    assert applied.returncode == 0, applied.stderr
    yield CLUSTER
    kube.kubectl("delete", "raycluster", CLUSTER, "--ignore-not-found", "--wait=false")


def test_valid_raycluster_is_applied_server_side_with_strict_validation(kube: KubeStandin, cluster: str) -> None:
    stored = kube.get("rayclusters", cluster)
    assert stored is not None
    assert [(m["manager"], m["operation"]) for m in stored["metadata"]["managedFields"]][0] == ("rlkit", "Apply")
    # The CRD's defaults are filled in, as the API server does.
    assert stored["spec"]["workerGroupSpecs"][0]["numOfHosts"] == 1
    patches = [p for m, p in kube.state.requests if m == "PATCH" and f"/rayclusters/{cluster}?" in p]
    assert patches and "fieldValidation=Strict" in patches[0] and "fieldManager=rlkit" in patches[0]


@pytest.mark.parametrize("version", CLIENTS)
def test_clients_dry_run_a_valid_raycluster(kube: KubeStandin, tmp_path: Path, version: str) -> None:
    path = write(tmp_path, raycluster("dry-run-only", workers=2))
    result = kube.kubectl("apply", "--server-side", "--dry-run=server", "-f", str(path), version=version)
    assert result.returncode == 0, result.stderr
    assert "serverside-applied (server dry run)" in result.stdout
    assert kube.get("rayclusters", "dry-run-only") is None


@pytest.mark.parametrize("version", CLIENTS)
def test_unknown_field_is_refused_with_its_path(kube: KubeStandin, tmp_path: Path, version: str) -> None:
    bad = raycluster("unknown-field", workers=1)
    bad["spec"]["workerGroupSpecs"][0]["bogus"] = 1
    path = write(tmp_path, bad)
    applied = kube.kubectl("apply", "--server-side", "-f", str(path), version=version)
    assert applied.returncode == 1
    assert ".spec.workerGroupSpecs[0].bogus: field not declared in schema" in applied.stderr
    created = kube.kubectl("create", "-f", str(path), version=version)
    assert created.returncode == 1
    assert 'strict decoding error: unknown field "spec.workerGroupSpecs[0].bogus"' in created.stderr
    assert kube.get("rayclusters", "unknown-field") is None


def test_types_and_required_fields_are_checked(kube: KubeStandin, tmp_path: Path) -> None:
    wrong_type = raycluster("wrong-type")
    wrong_type["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 1
    result = kube.kubectl("apply", "--server-side", "-f", str(write(tmp_path, wrong_type)))
    assert result.returncode == 1
    assert "spec.headGroupSpec.rayStartParams.num-cpus in body must be of type string" in result.stderr
    no_head = raycluster("no-head")
    del no_head["spec"]["headGroupSpec"]
    result = kube.kubectl("apply", "--server-side", "-f", str(write(tmp_path, no_head)))
    assert result.returncode == 1
    assert "spec.headGroupSpec: Required value" in result.stderr
    assert kube.get("rayclusters", "wrong-type") is None and kube.get("rayclusters", "no-head") is None


def test_names_over_53_characters_are_refused(kube: KubeStandin, tmp_path: Path) -> None:
    longest = "n" * 53
    ok = kube.kubectl("apply", "--server-side", "--dry-run=server", "-f", str(write(tmp_path, raycluster(longest))))
    assert ok.returncode == 0, ok.stderr
    too_long = "n" * 54
    refused = kube.kubectl("apply", "--server-side", "-f", str(write(tmp_path, raycluster(too_long))))
    assert refused.returncode == 1
    assert "RayCluster name should be no more than 53 characters" in refused.stderr
    assert kube.get("rayclusters", too_long) is None
    # Without KubeRay's webhook the API server stores it; the operator refuses it.
    with kube.webhook(False):
        stored = kube.kubectl("apply", "--server-side", "-f", str(write(tmp_path, raycluster(too_long))))
    assert stored.returncode == 0, stored.stderr
    try:
        events = wait_for(lambda: kube.objects("events"), 20, "the operator's event")
        assert [(e["type"], e["reason"]) for e in events if e["involvedObject"]["name"] == too_long] == [
            ("Warning", "InvalidRayClusterMetadata")]
        assert kube.objects("pods", labels=f"ray.io/cluster={too_long}") == []
    finally:
        kube.kubectl("delete", "raycluster", too_long)


def test_label_and_field_selectors_filter(kube: KubeStandin, tmp_path: Path) -> None:
    secrets = [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "labels": labels},
                "stringData": {"k": "v"}}
               for name, labels in (("sel-a", {"tier": "a", "team": "x"}), ("sel-b", {"tier": "b"}), ("sel-c", {}))]
    applied = kube.kubectl("apply", "--server-side", "-f", str(write(tmp_path, *secrets)))
    assert applied.returncode == 0, applied.stderr

    def names(*selector: str) -> list[str]:
        result = kube.kubectl("get", "secrets", *selector, "-o", "name")
        assert result.returncode == 0, result.stderr
        return sorted(n.removeprefix("secret/") for n in result.stdout.split() if n.startswith("secret/sel-"))

    assert names("-l", "tier=a") == ["sel-a"]
    assert names("-l", "tier!=a") == ["sel-b", "sel-c"]
    assert names("-l", "tier in (a,b)") == ["sel-a", "sel-b"]
    assert names("-l", "tier notin (a)") == ["sel-b", "sel-c"]
    assert names("-l", "tier") == ["sel-a", "sel-b"]
    assert names("-l", "!tier") == ["sel-c"]
    assert names("-l", "tier=a,team=x") == ["sel-a"]
    assert names("--field-selector", "metadata.name=sel-b") == ["sel-b"]
    assert names("--field-selector", "metadata.name!=sel-b,metadata.namespace=default") == ["sel-a", "sel-c"]
    unsupported = kube.kubectl("get", "secrets", "--field-selector", "spec.bogus=1")
    assert unsupported.returncode == 1 and "field label not supported: spec.bogus" in unsupported.stderr
    kube.kubectl("delete", "secret", "sel-a", "sel-b", "sel-c")


def test_unknown_namespace_is_not_found_until_it_exists(kube: KubeStandin, tmp_path: Path) -> None:
    path = write(tmp_path, raycluster("in-team-b"))
    missing = kube.kubectl("apply", "--server-side", "--dry-run=server", "-n", "team-b", "-f", str(path))
    assert missing.returncode == 1 and 'namespaces "team-b" not found' in missing.stderr
    kube.add_namespace("team-b")
    present = kube.kubectl("apply", "--server-side", "--dry-run=server", "-n", "team-b", "-f", str(path))
    assert present.returncode == 0, present.stderr


def test_requests_without_the_bearer_token_are_unauthorized(kube: KubeStandin) -> None:
    tls = ssl.create_default_context(cadata=kube.server.cert.read_text())
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{kube.url}/api/v1/namespaces/default/secrets", context=tls, timeout=10)
    assert refused.value.code == 401
    assert json.loads(refused.value.read())["reason"] == "Unauthorized"


def test_without_the_crd_raycluster_is_unknown(kube: KubeStandin, tmp_path: Path) -> None:
    path = write(tmp_path, raycluster("no-crd"))
    with kube.crd_installed(False):
        applied = kube.kubectl("apply", "--server-side", "-f", str(path))
        resources = kube.kubectl("api-resources", "--api-group=ray.io", "-o", "name")
    assert applied.returncode == 1
    assert 'no matches for kind "RayCluster" in version "ray.io/v1"' in applied.stderr
    assert "rayclusters" not in resources.stdout
    assert kube.get("rayclusters", "no-crd") is None


def test_an_image_it_cannot_pull_gives_image_pull_backoff(kube: KubeStandin, tmp_path: Path) -> None:
    image = "registry.invalid/not-ray:1"
    applied = kube.kubectl("apply", "--server-side", "-f", str(write(tmp_path, raycluster("bad-image", image=image))))
    assert applied.returncode == 0, applied.stderr
    try:
        def waiting() -> dict[str, Any] | None:
            result = kube.kubectl("get", "pods", "-l", "ray.io/cluster=bad-image", "-o", "json")
            states = [s["state"].get("waiting") for p in json.loads(result.stdout)["items"]
                      for s in p["status"].get("containerStatuses", [])]
            return next((w for w in states if w and w["reason"] == "ImagePullBackOff"), None)

        state = wait_for(waiting, 20, "ImagePullBackOff")
        assert image in state["message"]
        assert kube.operator.pids("bad-image") == []
    finally:
        kube.kubectl("delete", "raycluster", "bad-image")


def test_kubectl_wait_returns_when_the_head_pod_is_ready(kube: KubeStandin, cluster: str) -> None:
    waited = kube.kubectl("wait", "--for=condition=HeadPodReady", f"raycluster/{cluster}", "--timeout=240s", timeout=250)
    assert waited.returncode == 0, (waited.stderr, [p["status"] for p in kube.objects("pods")])
    assert any(m == "GET" and "watch=true" in p and f"metadata.name%3D{cluster}" in p for m, p in kube.state.requests)
    status = kube.get("rayclusters", cluster)["status"]
    assert status["state"] == "ready"
    head = status["head"]
    assert head["serviceName"] == f"{cluster}-head-svc" and head["podName"].startswith(f"{cluster}-head-")
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", head["podIP"]) and head["serviceIP"]
    assert status["endpoints"]["dashboard"] == "8265"
    service = kube.get("services", f"{cluster}-head-svc")
    assert service["spec"]["type"] == "ClusterIP"
    assert {"gcs", "dashboard", "client"} <= {p["name"] for p in service["spec"]["ports"]}


def test_the_cluster_is_real_ray_behind_the_service_proxy(kube: KubeStandin, cluster: str) -> None:
    waited = kube.kubectl("wait", "--for=condition=RayClusterProvisioned", f"raycluster/{cluster}",
                          "--timeout=240s", timeout=250)
    assert waited.returncode == 0, waited.stderr
    running_pods = kube.kubectl("get", "pods", "-l", f"ray.io/cluster={cluster}",
                                "--field-selector", "status.phase=Running", "-o", "json")
    labels = sorted((p["metadata"]["labels"]["ray.io/node-type"], p["metadata"]["labels"]["ray.io/group"])
                    for p in json.loads(running_pods.stdout)["items"])
    assert labels == [("head", "headgroup"), ("worker", "cpu")]
    status = kube.get("rayclusters", cluster)["status"]
    assert (status["readyWorkerReplicas"], status["desiredWorkerReplicas"], status["desiredCPU"]) == (1, 1, "2")

    secret = kube.get("secrets", cluster)
    assert secret["metadata"]["ownerReferences"][0]["name"] == cluster
    token = base64.b64decode(secret["data"]["auth_token"]).decode()
    proxy = subprocess.Popen(["kubectl", "proxy", "--port=0"], env=kube.env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        assert proxy.stdout is not None
        port = re.search(r"127\.0\.0\.1:(\d+)", proxy.stdout.readline())[1]
        base = f"http://127.0.0.1:{port}/api/v1/namespaces/default/services/{cluster}-head-svc:dashboard/proxy"

        def get(headers: dict[str, str]) -> tuple[int, bytes]:
            request = urllib.request.Request(f"{base}/api/v0/nodes", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    return answer.status, answer.read()
            except urllib.error.HTTPError as err:
                return err.code, err.read()

        code, body = get({"X-Ray-Authorization": f"Bearer {token}"})
        assert code == 200, body
        nodes = [n for n in json.loads(body)["data"]["result"]["result"] if n["state"] == "ALIVE"]
        assert sorted(n["resources_total"].get("CPU", 0) for n in nodes) == [0, 1]
        assert {n["node_ip"] for n in nodes} == {p["status"]["podIP"] for p in json.loads(running_pods.stdout)["items"]}
        assert get({})[0] == 401
        # A Ray token in Authorization is taken as the user's Kubernetes credential, and refused.
        code, body = get({"Authorization": f"Bearer {token}"})
        assert code == 401 and json.loads(body)["kind"] == "Status"
    finally:
        os.kill(proxy.pid, signal.SIGTERM)
        proxy.wait(timeout=10)


def test_deleting_the_raycluster_stops_its_processes_and_collects_its_objects(kube: KubeStandin, cluster: str) -> None:
    pids = kube.operator.pids(cluster)
    assert pids
    deleted = kube.kubectl("delete", "raycluster", cluster)
    assert deleted.returncode == 0, deleted.stderr
    assert kube.get("secrets", cluster) is None and kube.get("services", f"{cluster}-head-svc") is None
    assert kube.objects("pods", labels=f"ray.io/cluster={cluster}") == []
    wait_for(lambda: not any(running(p) for p in pids), 60, "the cluster's processes to end")
