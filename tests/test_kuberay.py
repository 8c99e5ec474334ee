"""``rlkit launch kuberay`` and the other commands on KubeRay clusters,
through real kubectl, against the stand-in API server and operator of
``tests/kube`` (which turns each RayCluster into real Ray processes here).

One launched pair of clusters is shared by the module; tests run in file
order and the last ones tear clusters down. The fixture's finalizer tears
down whatever is left, and checks that no kubectl proxy survives.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rlkit.clusters import procs
from rlkit.clusters.records import ClusterRecord, list_records, load_record
from tests.cli_helpers import RLKIT, run_rlkit
from tests.conftest import CONFIGS
from tests.kube.fixture import KubeStandin, kube  # noqa: F401  (the stand-in API server, session-wide)

pytestmark = pytest.mark.timeout(400)

SMALL = ["--set", "stop.total_steps=1024", "--set", "rollout.num_workers=1", "--set", "rollout.envs_per_worker=4",
         "--set", "checkpoint.every_updates=1000"]
# Heads alone: each stand-in pod is a real Ray node, and a 2-core machine
# starts four slowly (a worker's join is the stand-in's own tests' subject).
POD = ["--workers", "0", "--head-cpus", "2"]


@dataclass
class Pair:
    env: dict[str, str]
    kube: KubeStandin
    work: Path

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", "--context", self.kube.context, "-n", self.kube.namespace, *args],
                              input=stdin, capture_output=True, text=True, timeout=60, env={**os.environ, **self.env})

    def rayclusters(self) -> dict[str, dict[str, object]]:
        result = self.kubectl("get", "rayclusters", "-o", "json")
        assert result.returncode == 0, result.stderr
        return {item["metadata"]["name"]: item for item in json.loads(result.stdout)["items"]}


def _status() -> dict[str, dict[str, object]]:
    result = run_rlkit("status", "--json", timeout=60)
    return {c["name"]: c for c in json.loads(result.stdout)["clusters"]}


def _proxies_gone(records: list[ClusterRecord]) -> list[int]:
    return [r.tunnel.pid for r in records if r.tunnel and procs.is_running(r.tunnel)]


@pytest.fixture(scope="module")
def pair(kube: KubeStandin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    base = tmp_path_factory.mktemp("kuberay")
    work = base / "project"
    shutil.copytree(CONFIGS, work / "configs")
    env = {"RLKIT_HOME": str(base / "home"), "RLKIT_RAY_ADDRESS_FILE": str(base / "ray_address"),
           "KUBECONFIG": kube.env["KUBECONFIG"], "KUBECACHEDIR": kube.env["KUBECACHEDIR"]}
    seen: list[ClusterRecord] = []
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.delenv("RAY_ADDRESS", raising=False)
        try:
            result = run_rlkit("launch", "kuberay", "--name", "kr", "--num-clusters", "2", *POD,
                               "--context", kube.context, "--namespace", kube.namespace,
                               "--timeout", "240", "--json", timeout=300)
            assert result.returncode == 0, result.stderr
            seen += [ClusterRecord.from_dict(r) for r in json.loads(result.stdout)]
            yield Pair(env, kube, work)
        finally:
            seen += list_records()
            for record in list_records():
                run_rlkit("teardown", "-y", "--force", record.name, timeout=120)
            assert not _proxies_gone([load_record(r.name) or r for r in seen]), "a kubectl proxy outlived teardown"


@pytest.fixture(autouse=True)
def in_pair(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in pair.env.items():
        monkeypatch.setenv(key, value)


def test_two_clusters_are_up_with_their_nodes_and_kubernetes_view(pair: Pair) -> None:
    clusters = _status()
    assert set(clusters) == {"kr-1", "kr-2"}
    for c in clusters.values():
        assert (c["provider"], c["state"], c["nodes_alive"], c["token_auth"]) == ("kuberay", "UP", 1, True), c
        assert c["kube"]["pods_ready"] == c["kube"]["pods_desired"] == 1, c["kube"]
        assert c["cpus_total"] == 2
        assert c["kube"]["condition"] == "RayClusterProvisioned"
    objects = pair.rayclusters()
    for name in ("kr-1", "kr-2"):
        labels = objects[name]["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "rlkit" and labels["rlkit.dev/cluster"] == name
        record = load_record(name)
        assert record and record.kube and record.kube["uid"] == objects[name]["metadata"]["uid"]
        # The token never reaches the address file or the record.
        token = Path(str(record.token_path)).read_text().strip()
        assert token and token not in Path(pair.env["RLKIT_RAY_ADDRESS_FILE"]).read_text()
        assert oct(Path(str(record.token_path)).stat().st_mode & 0o777) == "0o600"


def test_a_train_job_on_each_cluster_succeeds(pair: Pair, tmp_path: Path) -> None:
    train = "rlkit train configs/ppo_cartpole.yaml " + " ".join(SMALL)
    result = run_rlkit("submit", "-w", str(pair.work), "--cluster", "kr-1", "--cluster", "kr-2",
                       "--runs-dir", str(tmp_path / "runs"), "--follow", f"{train} --name a", f"{train} --name b",
                       timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✓ kr-1 a SUCCEEDED" in result.stdout and "✓ kr-2 b SUCCEEDED" in result.stdout, result.stdout


def test_rays_own_job_cli_works_after_rlkit_env(pair: Pair) -> None:
    exports = run_rlkit("env", "kr-2")
    assert exports.returncode == 0, exports.stderr
    ray = Path(RLKIT).parent / "ray"
    script = f'{exports.stdout}\n{ray} job submit -- python -c "print(6 * 7)"'
    # As a user's shell would have it: Ray's token mode on, which rlkit env must undo.
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=180,
                            env={**os.environ, "RAY_AUTH_MODE": "token"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "42" in result.stdout and "succeeded" in result.stdout


def test_a_killed_proxy_is_brought_back_by_status(pair: Pair) -> None:
    before = load_record("kr-2")
    assert before and before.tunnel
    os.kill(before.tunnel.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while procs.is_running(before.tunnel) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _status()["kr-2"]["state"] == "UP"
    after = load_record("kr-2")
    assert after and after.tunnel and after.tunnel != before.tunnel and procs.is_running(after.tunnel)


def test_teardown_of_one_leaves_the_other_and_a_foreign_look_alike(pair: Pair) -> None:
    # Someone else's RayCluster with a similar name and no rlkit labels (an
    # image that cannot be pulled keeps it cheap: no Ray starts for it).
    foreign = {"apiVersion": "ray.io/v1", "kind": "RayCluster",
               "metadata": {"name": "kr-10", "labels": {"rlkit.dev/cluster": "kr-1"}},
               "spec": {"headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [
                   {"name": "ray-head", "image": "example.invalid/none:0"}]}}}}}
    applied = pair.kubectl("apply", "-f", "-", stdin=json.dumps(foreign))
    assert applied.returncode == 0, applied.stderr
    try:
        record = load_record("kr-1")
        assert record and record.tunnel
        result = run_rlkit("teardown", "-y", "kr-1", timeout=180)
        assert result.returncode == 0, result.stderr
        objects = pair.rayclusters()
        assert "kr-1" not in objects and "kr-10" in objects and "kr-2" in objects
        secrets = pair.kubectl("get", "secret", "kr-1", "--ignore-not-found", "-o", "name")
        assert secrets.stdout.strip() == "", "the token Secret outlived its RayCluster"
        assert not procs.is_running(record.tunnel) and not Path(str(record.token_path)).exists()
        assert _status()["kr-2"]["state"] == "UP"
        again = run_rlkit("teardown", "-y", "kr-1")
        assert again.returncode != 0 and "kr-1" in again.stderr  # forgotten: nothing of it is left to stop
    finally:
        pair.kubectl("delete", "raycluster", "kr-10", "--ignore-not-found")


def _nothing_left(pair: Pair, name: str) -> None:
    assert load_record(name) is None
    assert name not in pair.rayclusters()
    assert name not in Path(pair.env["RLKIT_RAY_ADDRESS_FILE"]).read_text()


@pytest.mark.parametrize("case", ["unknown-context", "image-pull", "timeout"])
def test_a_failed_launch_is_one_line_and_leaves_nothing(pair: Pair, case: str) -> None:
    args = ["launch", "kuberay", "--name", f"bad-{case}", "--workers", "0", "--head-cpus", "1",
            "--namespace", pair.kube.namespace]
    if case == "unknown-context":
        args += ["--context", "no-such-context"]
        expected, code = "no context 'no-such-context' in the kubeconfig", 2
    elif case == "image-pull":
        args += ["--context", pair.kube.context, "--image", "example.invalid/no-such-image:1"]
        expected, code = "cannot pull image example.invalid/no-such-image:1", 1
    else:
        args += ["--context", pair.kube.context, "--timeout", "1"]
        expected, code = "not ready in time", 1
    result = run_rlkit(*args, timeout=120)
    assert result.returncode == code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in result.stderr, result.stderr
    _nothing_left(pair, f"bad-{case}")


def test_dry_run_output_passes_the_servers_validation(pair: Pair) -> None:
    result = run_rlkit("launch", "kuberay", "--name", "dry", "--num-clusters", "2", "--worker-gpus", "1",
                       "--context", pair.kube.context, "--namespace", pair.kube.namespace, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "auth_token" not in result.stdout and "mode: token" in result.stdout
    checked = pair.kubectl("apply", "--server-side", "--field-manager=rlkit", "--dry-run=server", "-f", "-",
                           stdin=result.stdout)
    assert checked.returncode == 0, checked.stderr
    assert "dry" not in pair.rayclusters()


def test_a_missing_crd_is_one_line_with_the_install_hint(pair: Pair) -> None:
    with pair.kube.crd_installed(False):
        result = run_rlkit("launch", "kuberay", "--name", "nocrd", "--context", pair.kube.context,
                           "--namespace", pair.kube.namespace, timeout=60)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "RayCluster CRD" in lines[0] and "helm install kuberay-operator" in lines[0], result.stderr
    _nothing_left(pair, "nocrd")
