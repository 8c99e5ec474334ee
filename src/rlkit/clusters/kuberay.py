"""The KubeRay provider: RayClusters on Kubernetes, driven with kubectl.

rlkit renders ``cluster_configs/kuberay.yaml`` (a ``ray.io/v1`` RayCluster,
plain YAML with placeholders), applies it server-side as field manager
``rlkit``, waits for the operator to report it ready, copies the Ray token
that the operator keeps in a Secret named after the RayCluster (token
authentication, KubeRay 1.5.1+) to ``$RLKIT_HOME/tokens``, and keeps a
``kubectl proxy`` on this machine's loopback through which the head's
dashboard is reached at the API server's service proxy path. The token
travels as ``X-Ray-Authorization``: kubectl proxy hands an ``Authorization``
header on to the API server as the Kubernetes credential.

Everything rlkit creates carries ``app.kubernetes.io/managed-by: rlkit``,
the cluster's name and this launch's id; the record keeps the context, the
namespace, the kubeconfig and the RayCluster's UID, and teardown deletes
only the RayCluster that matches all of them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from rlkit import paths
from rlkit.clusters import auth, dashboard, health, procs, tunnel
from rlkit.clusters.provider import REMOTE_RUNS_BASE, Progress, Provider, StopResult
from rlkit.clusters.records import ClusterRecord, check_name, delete_record, save_record
from rlkit.errors import BadInputError, RlkitError, WorkFailedError
from rlkit.files import atomic_write

NAME = "kuberay"
DEFAULT_TEMPLATE = paths.cluster_template("kuberay.yaml")
# KubeRay refuses longer RayCluster names (it derives the services' names from them).
MAX_NAME = 53
_K8S_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MANAGED_BY = "app.kubernetes.io/managed-by"
CLUSTER_LABEL = "rlkit.dev/cluster"
LAUNCH_LABEL = "rlkit.dev/launch"
FIELD_MANAGER = "rlkit"
# The header Ray's dashboard reads when a proxy owns Authorization.
AUTH_HEADER = "X-Ray-Authorization"
TOKEN_KEY = "auth_token"
START_TIMEOUT_S = 600.0
REQUEST_TIMEOUT_S = 10.0
PROXY_TIMEOUT_S = 10.0
LAUNCH_AT_LAUNCH = "made-at-launch"
CRD_HINT = ("install the KubeRay operator 1.5.1 or later: helm repo add kuberay https://ray-project.github.io/kuberay-helm/"
            " && helm install kuberay-operator kuberay/kuberay-operator --version 1.5.1")
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_SERVING = re.compile(r"Starting to serve on 127\.0\.0\.1:(\d+)")
_PULL_FAILURES = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName")


def default_image() -> str:
    """Ray's own image of the Ray version installed here."""
    return f"rayproject/ray:{metadata.version('ray')}"


# ------------------------------------------------------------------ kubectl


@dataclass(frozen=True)
class Kube:
    """Where a RayCluster lives: kept in the record as ``record.kube``."""

    context: str
    namespace: str
    # The KUBECONFIG of the launching shell, so that teardown from another
    # shell talks to the same API server.
    kubeconfig: str = ""

    def run(self, *args: str, timeout: float = REQUEST_TIMEOUT_S, stdin: str | None = None,
            namespaced: bool = True) -> subprocess.CompletedProcess[str]:
        """``kubectl ARGS`` in this context (and namespace), bounded by ``timeout``."""
        command = [kubectl(), "--context", self.context, f"--request-timeout={max(1, int(timeout))}s"]
        if namespaced:
            command += ["--namespace", self.namespace]
        return _run([*command, *args], self.kubeconfig, timeout, stdin)

    def check(self, *args: str, what: str, timeout: float = REQUEST_TIMEOUT_S,
              stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """``run``, raising the error that says what went wrong when kubectl fails."""
        result = self.run(*args, timeout=timeout, stdin=stdin)
        if result.returncode != 0:
            raise kubectl_error(result.stderr, self, what)
        return result

    def get(self, kind: str, name: str, timeout: float = REQUEST_TIMEOUT_S) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        result = self.run("get", kind, name, "--ignore-not-found", "-o", "json", timeout=timeout)
        if result.returncode != 0:
            raise kubectl_error(result.stderr, self, f"reading {kind} {name}")
        return json.loads(result.stdout) if result.stdout.strip() else None

    def to_dict(self) -> dict[str, str]:
        return {"context": self.context, "namespace": self.namespace, "kubeconfig": self.kubeconfig}


def kubectl() -> str:
    found = shutil.which("kubectl")
    if not found:
        raise WorkFailedError("kubectl is not installed (or not on PATH)", "install it: https://kubernetes.io/docs/tasks/tools/")
    return found


def _run(command: list[str], kubeconfig: str, timeout: float, stdin: str | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    try:
        return subprocess.run(command, input=stdin, capture_output=True, text=True, env=env, timeout=timeout + 5,
                              check=False, stdin=None if stdin is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, 124, "", f"Unable to connect to the server: no answer within {timeout:.0f} s")


def kubectl_error(stderr: str, kube: Kube, what: str) -> RlkitError:
    """kubectl's failure as one line that names the cause."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    text = lines[-1] if lines else "kubectl failed with no message"
    where = f"context {kube.context!r}"
    if re.search(r'no matches for kind "RayCluster"|resource type "rayclusters"|rayclusters\.ray\.io.*not found', stderr):
        return WorkFailedError(f"the RayCluster CRD (ray.io/v1) is not installed in {where}", CRD_HINT)
    if re.search(r'context "[^"]*" does not exist|context was not found', stderr):
        return BadInputError(f"no context {kube.context!r} in the kubeconfig", "`kubectl config get-contexts` lists them")
    if m := re.search(r'namespaces "([^"]+)" not found', stderr):
        return BadInputError(f"namespace {m[1]!r} does not exist in {where}", "pass --namespace with an existing one")
    if "(Forbidden)" in stderr:
        return WorkFailedError(f"{what}: kubectl is forbidden in {where}: {text.split(': ', 1)[-1]}",
                               "ask your admin for access to rayclusters.ray.io, pods and secrets in the namespace")
    if "(Unauthorized)" in stderr or "must be logged in" in stderr:
        return WorkFailedError(f"{what}: the API server of {where} refused kubectl's credentials",
                               "log in again (`kubectl get pods` should work)")
    if re.search(r"Unable to connect|connection refused|i/o timeout|deadline exceeded|no such host", stderr):
        return WorkFailedError(f"{what}: the API server of {where} does not answer ({text})")
    return WorkFailedError(f"{what} in {where}: {text}")


def resolve_kube(context: str | None, namespace: str | None) -> Kube:
    """The context and namespace to use, checked against the kubeconfig
    (no request to a server)."""
    kubeconfig = os.environ.get("KUBECONFIG", "")
    listed = _run([kubectl(), "config", "get-contexts", "-o", "name"], kubeconfig, REQUEST_TIMEOUT_S, None)
    contexts = listed.stdout.split() if listed.returncode == 0 else []
    if context is None:
        current = _run([kubectl(), "config", "current-context"], kubeconfig, REQUEST_TIMEOUT_S, None)
        if current.returncode != 0 or not current.stdout.strip():
            raise BadInputError("the kubeconfig has no current context", "pass --context (`kubectl config get-contexts` lists them)")
        context = current.stdout.strip()
    if context not in contexts:
        raise BadInputError(f"no context {context!r} in the kubeconfig",
                            f"known: {', '.join(contexts) or 'none'} (`kubectl config get-contexts`)")
    if namespace is None:
        view = _run([kubectl(), "config", "view", "--minify", "--context", context, "-o",
                     "jsonpath={.contexts[0].context.namespace}"], kubeconfig, REQUEST_TIMEOUT_S, None)
        namespace = view.stdout.strip() if view.returncode == 0 and view.stdout.strip() else "default"
    if not _K8S_NAME.match(namespace) or len(namespace) > 63:
        raise BadInputError(f"--namespace {namespace!r} is not a Kubernetes namespace name")
    return Kube(context, namespace, kubeconfig)


def kube_of(record: ClusterRecord) -> Kube:
    if not record.kube:
        raise BadInputError(f"{record.name}: rlkit's record has no Kubernetes context",
                            f"delete the RayCluster {record.name} with kubectl, then the record")
    return Kube(record.kube["context"], record.kube["namespace"], record.kube.get("kubeconfig", ""))


@dataclass(frozen=True)
class KubeRaySpec:
    """One RayCluster to start, and where."""

    name: str
    kube: Kube
    image: str = field(default_factory=default_image)
    workers: int = 1
    worker_cpus: float = 1.0
    worker_gpus: int = 0
    worker_memory: str = "2Gi"
    head_cpus: float = 1.0
    head_memory: str = "2Gi"
    template: Path = DEFAULT_TEMPLATE
    keep_on_failure: bool = False


def check_kube_name(name: str) -> str:
    """``name`` if it can name a RayCluster (and an rlkit cluster), else raise."""
    check_name(name)
    if len(name) > MAX_NAME or not _K8S_NAME.match(name):
        raise BadInputError(
            f"{name!r} cannot name a RayCluster",
            f"use at most {MAX_NAME} lowercase letters, digits and '-', starting with a letter",
        )
    return name


def specs_for(name: str, count: int = 1, context: str | None = None, namespace: str | None = None,
              **options: Any) -> list[KubeRaySpec]:
    """``count`` specs: NAME alone, or NAME-1 ... NAME-count, in ``context``
    and ``namespace`` (None: the kubeconfig's), all checked and rendered
    once, so that bad input fails before anything is sent."""
    if count < 1:
        raise BadInputError(f"--num-clusters must be at least 1, not {count}")
    names = [name] if count == 1 else [f"{name}-{i}" for i in range(1, count + 1)]
    for n in names:
        check_kube_name(n)
    if options.get("workers", 0) < 0 or options.get("worker_gpus", 0) < 0:
        raise BadInputError("--workers and --worker-gpus must be 0 or more")
    if options.get("worker_cpus", 1.0) <= 0 or options.get("head_cpus", 1.0) <= 0:
        raise BadInputError("--worker-cpus and --head-cpus must be above 0")
    kube = resolve_kube(context, namespace)
    specs = [KubeRaySpec(n, kube, **options) for n in names]
    for spec in specs:
        render(spec, LAUNCH_AT_LAUNCH)
    return specs


# ------------------------------------------------------------------ render


def load_template(template: Path) -> dict[str, Any]:
    """The template, checked: a ray.io/v1 RayCluster mapping."""
    try:
        manifest = yaml.safe_load(Path(template).read_text(encoding="utf-8"))
    except OSError as err:
        raise BadInputError(f"cluster template {template}: {err.strerror}", "pass --config PATH") from None
    except yaml.YAMLError as err:
        raise BadInputError(f"cluster template {template} is not valid YAML: {str(err).strip().splitlines()[0]}") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != "RayCluster" or manifest.get("apiVersion") != "ray.io/v1":
        raise BadInputError(f"cluster template {template} is not a ray.io/v1 RayCluster", f"start from {DEFAULT_TEMPLATE}")
    spec = manifest.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("headGroupSpec"), dict):
        raise BadInputError(f"cluster template {template} has no spec.headGroupSpec", f"start from {DEFAULT_TEMPLATE}")
    service = spec["headGroupSpec"].get("serviceType", "ClusterIP")
    if service != "ClusterIP":
        raise BadInputError(
            f"cluster template {template} exposes the head as a {service} service",
            "keep serviceType: ClusterIP (rlkit reaches the dashboard through kubectl proxy)",
        )
    return manifest


def _quantity(value: float) -> str:
    return f"{value:g}"


def render(spec: KubeRaySpec, launch_id: str) -> dict[str, Any]:
    """The RayCluster manifest that launching ``spec`` applies."""
    kube = spec.kube
    manifest = load_template(spec.template)
    values: dict[str, Any] = {
        "name": spec.name, "namespace": kube.namespace, "image": spec.image, "ray_version": metadata.version("ray"),
        "workers": spec.workers, "worker_cpus": _quantity(spec.worker_cpus), "worker_memory": spec.worker_memory,
        "head_cpus": _quantity(spec.head_cpus), "head_memory": spec.head_memory,
    }
    manifest = _fill(manifest, values, spec.template)
    labels = {MANAGED_BY: "rlkit", CLUSTER_LABEL: spec.name, LAUNCH_LABEL: launch_id}
    meta = manifest.setdefault("metadata", {})
    meta.update(name=spec.name, namespace=kube.namespace)
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    body = manifest["spec"]
    body["authOptions"] = {"mode": "token"}
    groups = body.get("workerGroupSpecs") or []
    for group in [body["headGroupSpec"], *groups]:
        template = group.setdefault("template", {})
        template_meta = template.setdefault("metadata", {})
        template_meta["labels"] = {**(template_meta.get("labels") or {}), **labels}
    if spec.worker_gpus:
        for group in groups:
            container = group["template"]["spec"]["containers"][0]
            limits = container.setdefault("resources", {}).setdefault("limits", {})
            limits["nvidia.com/gpu"] = spec.worker_gpus
    return manifest


def _fill(node: Any, values: dict[str, Any], template: Path) -> Any:
    """Placeholders filled in every string; a string that is one
    placeholder alone takes the value's type (a replica count stays a number)."""
    if isinstance(node, dict):
        return {k: _fill(v, values, template) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, values, template) for v in node]
    if not isinstance(node, str):
        return node

    def value(match: re.Match[str]) -> Any:
        if match.group(1) not in values:
            known = ", ".join("{{" + k + "}}" for k in values)
            raise BadInputError(f"unknown placeholder {match.group(0)} in {template}", f"known: {known}")
        return values[match.group(1)]

    whole = _PLACEHOLDER.fullmatch(node.strip())
    if whole:
        return value(whole)
    return _PLACEHOLDER.sub(lambda m: str(value(m)), node)


def desired_pods(manifest: dict[str, Any]) -> int:
    """The head and every worker replica."""
    return 1 + sum(int(g.get("replicas") or 0) for g in manifest["spec"].get("workerGroupSpecs") or [])


def dry_run_manifest(spec: KubeRaySpec) -> dict[str, Any]:
    """The manifest ``--dry-run`` prints (the launch id is made at launch;
    the token is the operator's and appears in no manifest)."""
    return render(spec, LAUNCH_AT_LAUNCH)


# ------------------------------------------------------------------ launch


def _start(spec: KubeRaySpec, report: Progress, deadline: float) -> ClusterRecord:
    """Apply the RayCluster and wait until Ray takes jobs; on failure delete
    what was made (kept with ``keep_on_failure``, and its record with it)."""
    launch_id = secrets.token_hex(6)
    kube = spec.kube
    manifest = render(spec, launch_id)
    record = ClusterRecord(
        name=spec.name, provider=NAME, address="", dashboard_url="", state="starting",
        kube={**kube.to_dict(), "launch": launch_id, "uid": ""}, auth_header=AUTH_HEADER,
        resources={"CPU": spec.head_cpus + spec.workers * spec.worker_cpus, "GPU": float(spec.workers * spec.worker_gpus)},
    )
    # Saved before anything is sent, so that an interrupted launch can be torn down.
    save_record(record)
    try:
        report(spec.name, "applying the RayCluster")
        applied = kube.check("apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-o", "json", "-f", "-",
                             what=f"{spec.name}: applying the RayCluster", stdin=json.dumps(manifest))
        record.kube = {**record.kube, "uid": json.loads(applied.stdout)["metadata"]["uid"]}
        save_record(record)
        desired = desired_pods(manifest)
        cluster = _wait_provisioned(record, kube, desired, report, deadline)
        report(spec.name, "reading the token")
        record.token_path = str(_save_token(record, kube))
        service = ((cluster.get("status") or {}).get("head") or {}).get("serviceName") or f"{spec.name}-head-svc"
        record.ports = {tunnel.TUNNEL_PORT: 0}
        record.kube = {**record.kube, "service": service}
        report(spec.name, "starting kubectl proxy")
        record = start_proxy(record, max(5.0, deadline - time.monotonic()))
        save_record(record)
        report(spec.name, f"waiting for {desired} Ray nodes")
        _wait_for_ray(record, desired, deadline)
    except BaseException:
        if spec.keep_on_failure:
            record.state = "failed"
            save_record(record)
        else:
            _discard(record)
        raise
    record.state = "up"
    return record


def _wait_provisioned(record: ClusterRecord, kube: Kube, desired: int, report: Progress,
                      deadline: float) -> dict[str, Any]:
    """Poll the RayCluster and its pods until the operator says it is
    provisioned; a pod that cannot pull its image or be scheduled fails it."""
    name, ready = record.name, 0
    while True:
        left = max(1.0, deadline - time.monotonic())
        cluster = kube.get("raycluster", name, timeout=min(REQUEST_TIMEOUT_S, left))
        if cluster is None:
            raise WorkFailedError(f"{name}: the RayCluster was deleted while rlkit waited for it")
        pods = kube.check("get", "pods", "-l", f"ray.io/cluster={name}", "-o", "json", what=f"{name}: listing pods",
                          timeout=min(REQUEST_TIMEOUT_S, left))
        items = json.loads(pods.stdout).get("items") or []
        _check_pods(name, items)
        ready = sum(_pod_ready(p) for p in items)
        report(name, f"pods {ready}/{desired} ready")
        if provisioned(cluster):
            return cluster
        if time.monotonic() >= deadline:
            raise WorkFailedError(f"{name}: not ready in time ({ready}/{desired} pods ready)",
                                  f"`kubectl -n {kube.namespace} describe raycluster {name}` says why; pass a longer --timeout")
        time.sleep(1.0)


def provisioned(cluster: dict[str, Any]) -> bool:
    """KubeRay 1.2+ conditions HeadPodReady and RayClusterProvisioned; an
    older operator's ``state: ready`` otherwise."""
    status = cluster.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    if "RayClusterProvisioned" in conditions or "HeadPodReady" in conditions:
        return conditions.get("HeadPodReady") == "True" and conditions.get("RayClusterProvisioned") == "True"
    return status.get("state") == "ready"


def _pod_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in (pod.get("status") or {}).get("conditions") or [])


def _check_pods(name: str, pods: list[dict[str, Any]]) -> None:
    for pod in pods:
        pod_name = pod.get("metadata", {}).get("name", "?")
        status = pod.get("status") or {}
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in _PULL_FAILURES:
                image = container.get("image") or _spec_image(pod, container.get("name"))
                raise WorkFailedError(f"{name}: pod {pod_name} cannot pull image {image} ({waiting['reason']})",
                                      "check --image, and that the cluster's nodes may pull from its registry")
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
                raise WorkFailedError(f"{name}: pod {pod_name} cannot be scheduled: {condition.get('message', 'no reason given')}",
                                      "ask for fewer resources (--worker-cpus, --worker-memory, --worker-gpus) or add nodes")


def _spec_image(pod: dict[str, Any], container: str | None) -> str:
    containers = (pod.get("spec") or {}).get("containers") or []
    return next((c.get("image", "?") for c in containers if c.get("name") == container), "?")


def _save_token(record: ClusterRecord, kube: Kube) -> Path:
    """Copy the token from the operator's Secret (owned by our RayCluster) to
    ``$RLKIT_HOME/tokens``; it passes through no command line and no output."""
    secret = kube.get("secret", record.name)
    uid = (record.kube or {}).get("uid")
    if secret is None or not _owned_by(secret, uid):
        raise WorkFailedError(f"{record.name}: the operator made no token Secret {record.name}",
                              "token authentication needs KubeRay 1.5.1 or later and Ray 2.52 or later in the image")
    encoded = (secret.get("data") or {}).get(TOKEN_KEY)
    if not encoded:
        raise WorkFailedError(f"{record.name}: Secret {record.name} has no {TOKEN_KEY}")
    paths.private_dir(paths.tokens_dir())
    path = auth.token_file(record.name)
    atomic_write(path, base64.b64decode(encoded).decode("utf-8").strip(), mode=0o600)
    return path


def _owned_by(obj: dict[str, Any], uid: str | None) -> bool:
    return bool(uid) and any(ref.get("uid") == uid for ref in obj.get("metadata", {}).get("ownerReferences") or [])


def _wait_for_ray(record: ClusterRecord, expected: int, deadline: float) -> None:
    """Until the dashboard takes jobs and sees every pod's node alive."""
    token = auth.token_source(record.token_path).read()
    alive, last = 0, "no answer yet"
    while True:
        try:
            health.check_takes_jobs(record.dashboard_url, token, 5.0, AUTH_HEADER)
            query = "/api/v0/nodes?limit=10000&filter_keys=state&filter_predicates=%3D&filter_values=ALIVE"
            nodes = dashboard.get_json(record.dashboard_url, query, token, 5.0, AUTH_HEADER)
            alive = len(nodes["data"]["result"]["result"])
            if alive >= expected:
                return
            last = f"{alive} of {expected} Ray nodes alive"
        except dashboard.DashboardError as err:
            last = str(err)
        except (KeyError, TypeError):
            last = "the dashboard is not ready"
        if time.monotonic() >= deadline:
            raise WorkFailedError(f"{record.name}: Ray did not become ready in time ({last})")
        time.sleep(1.0)


def _discard(record: ClusterRecord) -> None:
    """Undo a launch that failed half-way."""
    try:
        stop(record)
    except RlkitError:
        pass  # the launch's own error is the one to report
    delete_record(record.name)


# ------------------------------------------------------------------ proxy


def start_proxy(record: ClusterRecord, timeout_s: float) -> ClusterRecord:
    """Start ``kubectl proxy`` on loopback (on the recorded port when it is
    free) and return the record with it and the dashboard address in it."""
    kube = kube_of(record)
    port = record.ports.get(tunnel.TUNNEL_PORT) or 0
    if port and not tunnel.port_free(port):
        port = 0
    log_path = tunnel.log_path(record.name)
    env = dict(os.environ)
    if kube.kubeconfig:
        env["KUBECONFIG"] = kube.kubeconfig
    with open(log_path, "w", encoding="utf-8") as log:
        # Its own session: the proxy outlives the rlkit command that started it.
        proc = subprocess.Popen(
            [kubectl(), "--context", kube.context, "proxy", "--address", "127.0.0.1", "--port", str(port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    while not (serving := _SERVING.search(log_path.read_text(errors="replace"))):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
            raise WorkFailedError(f"{record.name}: kubectl proxy did not start: {lines[-1] if lines else 'no output'}",
                                  f"see {log_path}")
        time.sleep(0.05)
    ref = procs.process_ref(proc.pid)
    assert ref is not None  # it printed its port just now
    port = int(serving[1])
    url = (f"http://127.0.0.1:{port}/api/v1/namespaces/{kube.namespace}/services/"
           f"{(record.kube or {}).get('service') or record.name + '-head-svc'}:dashboard/proxy")
    return replace(record, tunnel=ref, ports={**record.ports, tunnel.TUNNEL_PORT: port}, address=url, dashboard_url=url)


# ------------------------------------------------------------------ health and status


@dataclass
class KubeView:
    """What Kubernetes says of a RayCluster, beside what Ray says."""

    pods_ready: int | None = None
    pods_desired: int | None = None
    condition: str | None = None
    error: str | None = None

    def describe(self) -> str:
        if self.error:
            return f"kubernetes: {self.error}"
        return f"kubernetes: pods {self.pods_ready}/{self.pods_desired} ready, {self.condition}"


def kube_view(record: ClusterRecord, timeout: float) -> KubeView:
    """Pods ready/desired and the RayCluster's condition, in one request."""
    try:
        cluster = kube_of(record).get("raycluster", record.name, timeout=timeout)
    except RlkitError as err:
        return KubeView(error=err.message)
    if cluster is None or cluster["metadata"].get("uid") != (record.kube or {}).get("uid"):
        return KubeView(error=f"RayCluster {record.name} is gone")
    status = cluster.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    head = 1 if (conditions.get("HeadPodReady") or {}).get("status") == "True" else 0
    desired = 1 + int(status.get("desiredWorkerReplicas") or 0)
    provisioned_ = conditions.get("RayClusterProvisioned")
    if provisioned_:
        condition = "RayClusterProvisioned" if provisioned_.get("status") == "True" else f"not provisioned ({provisioned_.get('reason', '?')})"
    else:
        condition = f"state {status.get('state', 'unknown')}"
    return KubeView(head + int(status.get("readyWorkerReplicas") or 0), desired, condition)


# ------------------------------------------------------------------ stop


def describe_stop(record: ClusterRecord) -> list[str]:
    kube = record.kube or {}
    lines = [f"RayCluster {kube.get('namespace', '?')}/{record.name} (uid {kube.get('uid') or 'unknown'}) in context "
             f"{kube.get('context', '?')}, its pods and its token Secret"]
    if record.tunnel:
        lines.append(f"the kubectl proxy to its dashboard (pid {record.tunnel.pid})")
    return lines


def _ours(obj: dict[str, Any], record: ClusterRecord) -> bool:
    """The RayCluster this record's launch made: its labels, and its UID once known."""
    labels = obj.get("metadata", {}).get("labels") or {}
    kube = record.kube or {}
    if labels.get(MANAGED_BY) != "rlkit" or labels.get(CLUSTER_LABEL) != record.name:
        return False
    if labels.get(LAUNCH_LABEL) != kube.get("launch"):
        return False
    return not kube.get("uid") or obj["metadata"].get("uid") == kube["uid"]


def stop(record: ClusterRecord) -> StopResult:
    """Delete this launch's RayCluster (never one that only shares its
    name), make sure its token Secret went with it, end the proxy, and
    remove the token here. Idempotent."""
    kube = kube_of(record)
    what = f"{record.name}: deleting the RayCluster"
    found = kube.get("raycluster", record.name)
    deleted, note = 0, ""
    if found is not None and _ours(found, record):
        info = record.kube or {}
        selector = f"{MANAGED_BY}=rlkit,{CLUSTER_LABEL}={record.name},{LAUNCH_LABEL}={info.get('launch')}"
        kube.check("delete", "rayclusters", "-l", selector, "--field-selector", f"metadata.name={record.name}",
                   "--wait=true", what=what, timeout=60.0)
        deleted = 1
        uid = found["metadata"].get("uid")
    else:
        uid = (record.kube or {}).get("uid")
        if found is not None:
            note = f"a RayCluster {record.name} that this launch did not make is left alone"
    secret = kube.get("secret", record.name)
    if secret is not None and _owned_by(secret, uid):
        # The garbage collector deletes it after its owner; rlkit does not wait for it.
        kube.check("delete", "secret", record.name, "--ignore-not-found", what=f"{record.name}: deleting the token Secret")
    tunnel.stop(record)
    if record.token_path:
        Path(record.token_path).unlink(missing_ok=True)
    return StopResult(record.name, deleted, already_gone=not deleted, unit="RayClusters", note=note)


class KubeRayProvider(Provider):
    """RayClusters through the KubeRay operator (see the module's docstring)."""

    name = NAME

    def plan(self, spec: KubeRaySpec) -> list[str]:
        return yaml.safe_dump(dry_run_manifest(spec), sort_keys=False).splitlines()

    def start(self, spec: KubeRaySpec, report: Progress, deadline: float) -> ClusterRecord:
        return _start(spec, report, deadline)

    def discard(self, record: ClusterRecord) -> None:
        _discard(record)

    def describe_stop(self, record: ClusterRecord) -> list[str]:
        return describe_stop(record)

    def stop(self, record: ClusterRecord) -> StopResult:
        return stop(record)

    def reconnect(self, record: ClusterRecord) -> ClusterRecord | None:
        if record.tunnel is None or tunnel.is_open(record):
            return None
        return tunnel.ensure(record, PROXY_TIMEOUT_S, start=start_proxy)

    def runs_base(self, working_dir: Path) -> str:
        # On the head pod, under the home of the user Ray runs as in the image.
        return REMOTE_RUNS_BASE


provider = KubeRayProvider()
