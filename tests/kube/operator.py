"""The stand-in KubeRay operator: each RayCluster becomes a real Ray cluster
on this machine, one network namespace per pod, as KubeRay 1.5.1 would
make it on Kubernetes.

For a RayCluster it creates, owned by the RayCluster (so that deleting it
garbage-collects them):

- with ``spec.authOptions`` (mode ``token``, the default), a Secret named
  after the cluster (KubeRay's ``utils.CheckName(name)``, the name itself
  for names of 53 characters or fewer) holding a random token under
  ``auth_token``; every Ray node starts with RAY_AUTH_MODE=token and it;
- the head Service ``<name>-head-svc`` (ClusterIP; ports gcs 6379,
  dashboard 8265, client 10001, metrics 8080, serve 8000);
- the head pod and each worker group's ``replicas`` (clamped to
  min/maxReplicas, times numOfHosts) as pods labelled ``ray.io/cluster``,
  ``ray.io/node-type``, ``ray.io/group``. Each pod is a network namespace
  on a bridge of the operator's own, with an address of its own, running
  ``ray start`` (``--head`` or ``--address=<head pod IP>:6379``) with the
  group's ``rayStartParams`` as flags and, where those do not say,
  ``--num-cpus``/``--num-gpus``/``--memory`` from the first container's
  resource limits (requests when there are no limits), as KubeRay
  derives them.

Pods go Pending -> Running, Ready once Ray answers (the head: dashboard
and raylet health; a worker: its node alive in the head's node list); the
RayCluster's status then carries KubeRay 1.5's conditions (HeadPodReady,
RayClusterProvisioned), ``state: ready``, head pod/service names and IPs,
endpoints and worker replica counts.

Image "pulls": a pod's images must be ``rayproject/ray`` or
``rayproject/ray-ml`` (any tag or registry prefix ending in that
repository) or ``rlkit-test/ray``; any other image leaves the pod Pending
with its container waiting in ErrImagePull, then ImagePullBackOff, with a
message naming the image, and nothing is started for it.

A name KubeRay cannot use (over 53 characters, not a DNS-1035 label), when
the webhook did not refuse it already, gets a Warning event
``InvalidRayClusterMetadata`` and nothing else, as KubeRay's reconciler does.

Deleting a RayCluster stops its processes (every pid in its pods'
namespaces, SIGTERM then SIGKILL) and removes the namespaces; ``stop()``
does that for every cluster, then removes the bridge.
"""

from __future__ import annotations

import base64
import importlib.util
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlkit.clusters.procs import INHERITED_ENV
from tests.kube import schema
from tests.kube.store import EVENTS, PODS, RAYCLUSTERS, SECRETS, SERVICES, Store, now

_TESTHOSTS = Path(__file__).resolve().parents[2] / "scripts" / "testhosts.py"
PULLABLE = re.compile(r"^(?:[^/]+/)*(?:rayproject/ray|rayproject/ray-ml|rlkit-test/ray)(?::[\w.-]+)?(?:@sha256:[0-9a-f]+)?$")
HEAD_PORTS = (("gcs", 6379), ("dashboard", 8265), ("client", 10001), ("metrics", 8080), ("serve", 8000))
AGENT_PORT = 52365
START_TIMEOUT_S = 240.0
PULL_BACKOFF_S = 1.0
# Ray's object store defaults to 30% of the machine's memory per node; the
# stand-in's nodes share one machine, so each gets the minimum unless its
# rayStartParams say otherwise.
OBJECT_STORE_BYTES = 80 * 1024 * 1024
_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60, "n": 1e-9, "u": 1e-6,
           "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}


def quantity(value: Any) -> float:
    """A Kubernetes resource quantity ("500m", "2Gi", 4) as a number."""
    match = re.match(r"^([+-]?[\d.]+)([eE][+-]?\d+)?([A-Za-z]*)$", str(value).strip())
    if not match or match[3] not in _SUFFIX:
        raise ValueError(f"not a quantity: {value!r}")
    return float(match[1] + (match[2] or "")) * _SUFFIX[match[3]]


def _bytes_quantity(value: float) -> str:
    """Bytes as the API server prints a memory quantity ("3Gi", "1536Mi")."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        if value and value % _SUFFIX[suffix] == 0:
            return f"{int(value // _SUFFIX[suffix])}{suffix}"
    return f"{int(value)}"


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {(proc.stderr or proc.stdout).strip()}")
    return proc


def _testhosts() -> Any:
    """scripts/testhosts.py, whose subnet choice and lock the pod network shares."""
    spec = importlib.util.spec_from_file_location("rlkit_testhosts", _TESTHOSTS)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class PodNet:
    """One pod's network namespace and the processes that run in it."""

    netns: str
    veth: str
    ip: str
    temp_dir: str

    def pids(self) -> list[int]:
        proc = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True, check=False)
        return [int(p) for p in proc.stdout.split()]

    def stop(self, grace_s: float = 5.0) -> None:
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.1)
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class Network:
    """A bridge in the root namespace and the pod namespaces hung off it."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.bridge = f"rk8s{self.tag}"
        self._lock = threading.Lock()
        self._count = 0
        testhosts = _testhosts()
        # Under the test hosts' lock: two sessions (or a session and the SSH
        # test hosts) choosing at once would pick the same free subnet.
        with testhosts.state_root_locked():
            self.subnet = testhosts.pick_subnet("auto")
            hosts = list(self.subnet.hosts())
            self.gateway = str(hosts[0])
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
        self._free = [str(ip) for ip in hosts[9:]]

    def add_pod(self) -> PodNet:
        with self._lock:
            ip = self._free.pop(0)
            self._count += 1
            number = self._count
        pod = PodNet(f"rk8s-{self.tag}-{number}", f"rk{self.tag}p{number}", ip,
                     tempfile.mkdtemp(prefix="rk8s-", dir="/tmp"))
        try:
            _run("ip", "netns", "add", pod.netns)
            _run("ip", "link", "add", pod.veth, "type", "veth", "peer", "name", "eth0", "netns", pod.netns)
            _run("ip", "link", "set", pod.veth, "master", self.bridge, "up")
            _run("ip", "-n", pod.netns, "link", "set", "lo", "up")
            _run("ip", "-n", pod.netns, "addr", "add", f"{ip}/{self.subnet.prefixlen}", "dev", "eth0")
            _run("ip", "-n", pod.netns, "link", "set", "eth0", "up")
        except BaseException:
            pod.stop(0)
            raise
        return pod

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)


def _ray() -> str:
    return str(Path(sys.executable).parent / "ray")


def _owner(rc: dict[str, Any]) -> list[dict[str, Any]]:
    meta = rc["metadata"]
    return [{"apiVersion": "ray.io/v1", "kind": "RayCluster", "name": meta["name"], "uid": meta["uid"],
             "controller": True, "blockOwnerDeletion": True}]


def _resources(group: dict[str, Any]) -> dict[str, float]:
    """The group's CPUs, GPUs and memory (bytes) for ray start, as KubeRay reads them."""
    params = group.get("rayStartParams") or {}
    containers = group["template"]["spec"].get("containers") or [{}]
    res = containers[0].get("resources") or {}
    limits, requests = res.get("limits") or {}, res.get("requests") or {}
    out: dict[str, float] = {}
    for key, source, rounding in (("cpu", "num-cpus", math.ceil), ("nvidia.com/gpu", "num-gpus", math.ceil),
                                  ("memory", "memory", int)):
        if source in params:
            out[source] = float(params[source])
        elif key in limits or key in requests:
            out[source] = rounding(quantity(limits.get(key, requests.get(key))))
    return out


@dataclass
class ClusterRun:
    """What the operator runs for one RayCluster."""

    uid: str
    namespace: str
    name: str
    pods: dict[str, PodNet] = field(default_factory=dict)
    stopped: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class Operator:
    """The reconcile loop: a thread that watches the store's RayClusters and
    one bring-up thread per cluster."""

    def __init__(self, store: Store, root: Path, enabled: Callable[[], bool]) -> None:
        self.store = store
        self.root = root
        self.enabled = enabled
        self.network: Network | None = None
        self.runs: dict[str, ClusterRun] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.network = Network()
        self._thread = threading.Thread(target=self._loop, name="kube-standin-operator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
        stoppers = [threading.Thread(target=self._teardown, args=(run,)) for run in list(self.runs.values())]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        if self.network:
            self.network.remove()

    def pids(self, name: str | None = None) -> list[int]:
        """The processes that run now in the pods of RayCluster ``name`` (of every one: None)."""
        with self._lock:
            nets = [p for run in self.runs.values() if name in (None, run.name) for p in run.pods.values()]
        return [pid for net in nets for pid in net.pids()]

    # -- the loop

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            live = {rc["metadata"]["uid"]: rc for rc in self.store.list(RAYCLUSTERS)} if self.enabled() else {}
            for uid, rc in live.items():
                if uid not in self.runs:
                    run = ClusterRun(uid, rc["metadata"]["namespace"], rc["metadata"]["name"])
                    run.thread = threading.Thread(target=self._bring_up, args=(run,), daemon=True,
                                                  name=f"kube-standin-{run.name}")
                    with self._lock:
                        self.runs[uid] = run
                    run.thread.start()
            for uid, run in list(self.runs.items()):
                if uid not in live and self.enabled() and not run.stopped.is_set():
                    run.stopped.set()
                    threading.Thread(target=self._teardown, args=(run,), daemon=True,
                                     name=f"kube-standin-stop-{run.name}").start()

    def _teardown(self, run: ClusterRun) -> None:
        run.stopped.set()
        if run.thread and run.thread is not threading.current_thread():
            run.thread.join(timeout=START_TIMEOUT_S)
        stoppers = [threading.Thread(target=net.stop) for net in list(run.pods.values())]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        with self._lock:
            self.runs.pop(run.uid, None)

    # -- one cluster

    def _event(self, rc: dict[str, Any], kind: str, reason: str, message: str) -> None:
        meta = rc["metadata"]
        self.store.create(EVENTS, meta["namespace"], {
            "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": "ray.io/v1", "kind": "RayCluster", "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta["uid"]},
            "reason": reason, "message": message, "type": kind, "count": 1,
            "firstTimestamp": now(), "lastTimestamp": now(), "source": {"component": "raycluster-controller"},
        })

    def _status(self, run: ClusterRun, change: Callable[[dict[str, Any]], None]) -> None:
        def apply(rc: dict[str, Any]) -> None:
            if rc["metadata"]["uid"] == run.uid:
                status = rc.setdefault("status", {})
                change(status)
                status["lastUpdateTime"] = now()
                status["observedGeneration"] = rc["metadata"].get("generation", 1)
        self.store.update(RAYCLUSTERS, run.namespace, run.name, apply)

    def _bring_up(self, run: ClusterRun) -> None:
        rc = self.store.find(RAYCLUSTERS, run.namespace, run.name)
        if rc is None or rc["metadata"]["uid"] != run.uid:
            return
        problem = schema.name_problem(run.name)
        if problem:
            self._event(rc, "Warning", "InvalidRayClusterMetadata", problem)
            return
        spec = rc["spec"]
        token = None
        if spec.get("authOptions") is not None and spec["authOptions"].get("mode", "token") == "token":
            token = self._secret(rc)
        head_ip = self._service_and_head(run, rc, token)
        if head_ip is None:
            return
        workers: list[tuple[str, dict[str, Any]]] = []
        for group in spec.get("workerGroupSpecs") or []:
            if group.get("suspend"):
                continue
            replicas = min(max(group.get("replicas", 0), group.get("minReplicas", 0)), group.get("maxReplicas", 2**31 - 1))
            workers += [(group["groupName"], group)] * (replicas * group.get("numOfHosts", 1))
        self._status(run, lambda s: s.update(self._desired(spec)))
        ready = 0
        for group_name, group in workers:
            if run.stopped.is_set():
                return
            if self._worker(run, rc, group_name, group, head_ip, token):
                ready += 1
                self._status(run, lambda s, n=ready: s.update(readyWorkerReplicas=n, availableWorkerReplicas=n))
        if ready == len(workers):
            self._status(run, lambda s: self._condition(s, "RayClusterProvisioned", "True",
                                                        "AllPodRunningAndReadyFirstTime",
                                                        "All Ray Pods are ready for the first time"))

    @staticmethod
    def _desired(spec: dict[str, Any]) -> dict[str, Any]:
        groups = [(spec["headGroupSpec"], 1)] + [
            (g, min(max(g.get("replicas", 0), g.get("minReplicas", 0)), g.get("maxReplicas", 2**31 - 1))
             * g.get("numOfHosts", 1)) for g in spec.get("workerGroupSpecs") or [] if not g.get("suspend")]
        totals = {"cpu": 0.0, "memory": 0.0, "nvidia.com/gpu": 0.0}
        for group, count in groups:
            for container in group["template"]["spec"].get("containers") or []:
                res = container.get("resources") or {}
                for key in totals:
                    value = (res.get("requests") or {}).get(key, (res.get("limits") or {}).get(key))
                    if value is not None:
                        totals[key] += quantity(value) * count
        workers = sum(count for _, count in groups[1:])
        return {
            "desiredWorkerReplicas": workers,
            "minWorkerReplicas": sum(g.get("minReplicas", 0) * g.get("numOfHosts", 1) for g, _ in groups[1:]),
            "maxWorkerReplicas": sum(g.get("maxReplicas", 0) * g.get("numOfHosts", 1) for g, _ in groups[1:]),
            "desiredCPU": f"{totals['cpu']:g}", "desiredMemory": _bytes_quantity(totals["memory"]),
            "desiredGPU": f"{totals['nvidia.com/gpu']:g}", "desiredTPU": "0",
        }

    @staticmethod
    def _condition(status: dict[str, Any], kind: str, value: str, reason: str, message: str) -> None:
        conditions = [c for c in status.get("conditions", []) if c["type"] != kind]
        old = next((c for c in status.get("conditions", []) if c["type"] == kind), None)
        stamp = old["lastTransitionTime"] if old and old["status"] == value else now()
        conditions.append({"type": kind, "status": value, "reason": reason, "message": message,
                           "lastTransitionTime": stamp})
        status["conditions"] = conditions

    def _secret(self, rc: dict[str, Any]) -> str:
        meta = rc["metadata"]
        existing = self.store.find(SECRETS, meta["namespace"], meta["name"])
        if existing:
            return base64.b64decode(existing["data"]["auth_token"]).decode()
        token = secrets.token_hex(32)
        self.store.create(SECRETS, meta["namespace"], {
            "metadata": {"name": meta["name"], "labels": {"ray.io/cluster": meta["name"]}, "ownerReferences": _owner(rc)},
            "type": "Opaque", "data": {"auth_token": base64.b64encode(token.encode()).decode()},
        })
        return token

    def _labels(self, rc: dict[str, Any], template: dict[str, Any], node_type: str, group: str) -> dict[str, str]:
        return {**((template.get("metadata") or {}).get("labels") or {}), "ray.io/cluster": rc["metadata"]["name"],
                "ray.io/node-type": node_type, "ray.io/group": group, "ray.io/is-ray-node": "yes",
                "app.kubernetes.io/name": "kuberay", "app.kubernetes.io/created-by": "kuberay-operator"}

    def _service_and_head(self, run: ClusterRun, rc: dict[str, Any], token: str | None) -> str | None:
        name = rc["metadata"]["name"]
        service_name = f"{name}-head-svc"
        cluster_ip = f"10.96.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}"
        if self.store.find(SERVICES, run.namespace, service_name) is None:
            self.store.create(SERVICES, run.namespace, {
                "metadata": {"name": service_name, "ownerReferences": _owner(rc),
                             "labels": {"ray.io/cluster": name, "ray.io/node-type": "head",
                                        "ray.io/identifier": f"{name}-head", "app.kubernetes.io/name": "kuberay",
                                        "app.kubernetes.io/created-by": "kuberay-operator"}},
                "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                         "selector": {"ray.io/cluster": name, "ray.io/node-type": "head"},
                         "ports": [{"name": n, "port": p, "targetPort": p, "protocol": "TCP", "appProtocol": "tcp"}
                                   for n, p in HEAD_PORTS]},
                "status": {"loadBalancer": {}},
            })
        group = rc["spec"]["headGroupSpec"]
        pod_name, net = self._pod(run, rc, group, "head", "headgroup", f"{name}-head-{secrets.token_hex(3)[:5]}", token)
        if net is None:
            return None
        self._status(run, lambda s: s.update(head={"podIP": net.ip, "podName": pod_name, "serviceIP": cluster_ip,
                                                   "serviceName": service_name},
                                             endpoints={n: str(p) for n, p in HEAD_PORTS}))
        params = {"dashboard-host": "0.0.0.0", **(group.get("rayStartParams") or {})}
        started = self._ray_start(run, pod_name, net, ["--head"], params, group, token,
                                  lambda: self._head_ready(net.ip, token))
        if not started:
            return None
        self._status(run, lambda s: (s.update(state="ready"), self._condition(
            s, "HeadPodReady", "True", "HeadPodRunningAndReady", "")))
        return net.ip

    def _worker(self, run: ClusterRun, rc: dict[str, Any], group_name: str, group: dict[str, Any], head_ip: str,
                token: str | None) -> bool:
        name = rc["metadata"]["name"]
        pod_name, net = self._pod(run, rc, group, "worker", group_name,
                                  f"{name}-{group_name}-worker-{secrets.token_hex(3)[:5]}", token)
        if net is None:
            return False
        return self._ray_start(run, pod_name, net, [f"--address={head_ip}:6379"], group.get("rayStartParams") or {},
                               group, token, lambda: self._worker_ready(head_ip, net.ip, token))

    def _pod(self, run: ClusterRun, rc: dict[str, Any], group: dict[str, Any], node_type: str, group_name: str,
             pod_name: str, token: str | None) -> tuple[str, PodNet | None]:
        """Create the pod object; pull its images; give it a namespace (None
        when an image cannot be pulled or the cluster went away)."""
        template = group["template"]
        pod_spec = dict(template["spec"])
        env = [{"name": "RAY_AUTH_MODE", "value": "token"},
               {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": rc["metadata"]["name"],
                                                                         "key": "auth_token"}}}] if token else []
        pod_spec["containers"] = [{**c, "env": [*(c.get("env") or []), *env]} for c in pod_spec.get("containers") or []]
        self.store.create(PODS, run.namespace, {
            "metadata": {"name": pod_name, "labels": self._labels(rc, template, node_type, group_name),
                         "annotations": (template.get("metadata") or {}).get("annotations") or {},
                         "ownerReferences": _owner(rc)},
            "spec": pod_spec,
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]},
        })
        images = [c.get("image", "") for c in pod_spec["containers"]]
        bad = next((i for i in images if not PULLABLE.match(i)), None)
        if bad is not None:
            self._pull_failure(run, pod_name, pod_spec, bad)
            return pod_name, None
        if run.stopped.is_set():
            return pod_name, None
        assert self.network is not None
        net = self.network.add_pod()
        with self._lock:
            run.pods[pod_name] = net
        self._pod_status(run, pod_name, lambda s: s.update(podIP=net.ip, podIPs=[{"ip": net.ip}],
                                                           hostIP=self.network.gateway if self.network else ""))
        return pod_name, net

    def _pod_status(self, run: ClusterRun, pod_name: str, change: Callable[[dict[str, Any]], None]) -> None:
        self.store.update(PODS, run.namespace, pod_name, lambda pod: change(pod.setdefault("status", {})))

    def _pull_failure(self, run: ClusterRun, pod_name: str, pod_spec: dict[str, Any], image: str) -> None:
        for reason, message in (
            ("ErrImagePull", f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": not found'),
            ("ImagePullBackOff", f'Back-off pulling image "{image}"'),
        ):
            statuses = [{"name": c["name"], "image": c.get("image", ""), "ready": False, "restartCount": 0,
                         "started": False, "state": {"waiting": {"reason": reason, "message": message}}}
                        for c in pod_spec["containers"]]
            self._pod_status(run, pod_name, lambda s, st=statuses: s.update(containerStatuses=st))
            if run.stopped.wait(PULL_BACKOFF_S):
                return

    def _ray_start(self, run: ClusterRun, pod_name: str, net: PodNet, role: list[str], params: dict[str, str],
                   group: dict[str, Any], token: str | None, ready: Callable[[], bool]) -> bool:
        resources = _resources(group)
        flags = [f"--{k}={v}" for k, v in params.items() if k != "block"]
        for key, value in resources.items():
            if key not in params:
                flags.append(f"--{key}={int(value)}")
        if "object-store-memory" not in params:
            flags.append(f"--object-store-memory={OBJECT_STORE_BYTES}")
        command = ["ip", "netns", "exec", net.netns, _ray(), "start", *role, f"--node-ip-address={net.ip}",
                   f"--temp-dir={net.temp_dir}", "--disable-usage-stats", *flags]
        env = {k: v for k, v in os.environ.items() if k in INHERITED_ENV}
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])
        env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token" if token else "disabled")
        if token:
            env["RAY_AUTH_TOKEN"] = token
        containers = group["template"]["spec"]["containers"]
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=START_TIMEOUT_S)
        if result.returncode != 0:
            lines = [ln for ln in (result.stdout + result.stderr).splitlines() if ln.strip()]
            self._container_state(run, pod_name, containers, {"waiting": {
                "reason": "CrashLoopBackOff", "message": lines[-1] if lines else "ray start failed"}}, "Running")
            return False
        self._container_state(run, pod_name, containers, {"running": {"startedAt": now()}}, "Running")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            if run.stopped.wait(0.5) or time.monotonic() > deadline:
                return False
        self._container_state(run, pod_name, containers, {"running": {"startedAt": now()}}, "Running", ready=True)
        return True

    def _container_state(self, run: ClusterRun, pod_name: str, containers: list[dict[str, Any]], state: dict[str, Any],
                         phase: str, ready: bool = False) -> None:
        def change(status: dict[str, Any]) -> None:
            status["phase"] = phase
            status["containerStatuses"] = [{"name": c["name"], "image": c.get("image", ""), "ready": ready,
                                            "restartCount": 0, "started": True, "state": state} for c in containers]
            flag = "True" if ready else "False"
            status["conditions"] = [{"type": "PodScheduled", "status": "True"}, {"type": "Initialized", "status": "True"},
                                    {"type": "ContainersReady", "status": flag}, {"type": "Ready", "status": flag}]
        self._pod_status(run, pod_name, change)

    @staticmethod
    def _get(url: str, token: str | None) -> bytes | None:
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return answer.read()
        except (urllib.error.URLError, OSError):
            return None

    def _head_ready(self, ip: str, token: str | None) -> bool:
        return (self._get(f"http://{ip}:8265/api/gcs_healthz", token) is not None
                and self._get(f"http://{ip}:{AGENT_PORT}/api/local_raylet_healthz", token) is not None)

    def _worker_ready(self, head_ip: str, ip: str, token: str | None) -> bool:
        import json

        body = self._get(f"http://{head_ip}:8265/nodes?view=summary", token)
        if body is None:
            return False
        try:
            nodes = json.loads(body)["data"]["summary"]
        except (ValueError, KeyError, TypeError):
            return False
        return any(n.get("raylet", {}).get("state") == "ALIVE" and n.get("ip") == ip for n in nodes)
