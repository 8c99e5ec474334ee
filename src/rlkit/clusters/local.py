"""The local provider: independent Ray heads on this machine, one per name.

Each head gets its own ports (several clusters share the host), its own
short temp dir (Ray's unix sockets live there; their paths are limited to
about 107 bytes), its own token, and a dashboard on 127.0.0.1 by default.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from rlkit.clusters import auth, dashboard, locks, procs
from rlkit.clusters.provider import Progress, Provider, StopResult
from rlkit.clusters.records import (
    ClusterRecord,
    ProcessRef,
    check_name,
    delete_record,
    list_records,
    save_record,
)
from rlkit.errors import BadInputError, WorkFailedError

NAME = "local"
START_TIMEOUT_S = 180.0
STOP_GRACE_S = 10.0
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def on_loopback(address: str) -> bool:
    """Whether ``address`` (host:port, [v6]:port or a URL) names this machine's loopback."""
    from rlkit.clusters.address_file import parse_address

    try:
        return parse_address(address).host.strip("[]") in LOOPBACK_HOSTS
    except ValueError:
        return False

# Ports that rlkit picks itself, so that no two clusters take the same one;
# the node and object managers and the workers bind port 0 (the kernel picks).
_PORT_FLAGS = {
    "gcs": "--port",
    "dashboard": "--dashboard-port",
    "dashboard_agent_http": "--dashboard-agent-listen-port",
    "dashboard_agent_grpc": "--dashboard-agent-grpc-port",
    "client_server": "--ray-client-server-port",
    "runtime_env_agent": "--runtime-env-agent-port",
    "metrics_export": "--metrics-export-port",
}
# Fixed by Ray (44217, 44227) unless set in the environment.
_PORT_ENVS = {"autoscaler_metrics": "AUTOSCALER_METRIC_PORT", "dashboard_metrics": "DASHBOARD_METRIC_PORT"}
PORT_NAMES = (*_PORT_FLAGS, *_PORT_ENVS)
# A local cluster is one node, so it needs no address that other hosts reach.
# `ray start --node-ip-address=127.0.0.1` is no way to say so: Ray turns a
# loopback node address into the machine's own (resolve_ip_for_localhost).
# With Ray's single-machine mode (the default on macOS and Windows) its node
# address is 127.0.0.1, and from that the GCS, raylet, core workers, agents,
# client server and the three metrics servers each bind 127.0.0.1 alone
# (gcs_server.cc, grpc_server.cc, dashboard/agent.py, reporter_agent.py,
# monitor.py, util/client/server). The dashboard follows --dashboard-host;
# a cluster launched with a --host other hosts reach is Ray's default
# multi-node kind (others may join it), bound as Ray binds it.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@dataclass(frozen=True)
class LocalSpec:
    """What to start: ``host`` is where the dashboard listens;
    ``cpus``/``gpus`` None let Ray count the machine's."""

    name: str
    cpus: int | None = None
    gpus: int | None = None
    host: str = "127.0.0.1"
    token_auth: bool = True

    def exposure_warning(self) -> str | None:
        if self.host in LOOPBACK_HOSTS or self.token_auth:
            return None
        return (
            f"{self.name}: the dashboard listens on {self.host} without a token: "
            "anyone who reaches that address can run code on this machine"
        )


@dataclass(frozen=True)
class LocalPlan:
    """The ``ray start`` that launching ``spec`` runs (secrets excluded)."""

    spec: LocalSpec
    ports: dict[str, int]
    temp_dir: str
    command: list[str]
    env: dict[str, str]

    @property
    def dashboard_url(self) -> str:
        host = "127.0.0.1" if self.spec.host in (*LOOPBACK_HOSTS, "0.0.0.0", "::") else self.spec.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.ports['dashboard']}"


def specs_for(
    name: str, count: int = 1, cpus: int | None = None, gpus: int | None = None,
    host: str = "127.0.0.1", token_auth: bool = True,
) -> list[LocalSpec]:
    """``count`` specs: NAME alone, or NAME-1 ... NAME-count."""
    check_name(name)
    if count < 1:
        raise BadInputError(f"--num-clusters must be at least 1, not {count}")
    for label, value in (("--cpus", cpus), ("--gpus", gpus)):
        if value is not None and value < 0:
            raise BadInputError(f"{label} must be 0 or more, not {value}")
    names = [name] if count == 1 else [f"{name}-{i}" for i in range(1, count + 1)]
    return [LocalSpec(check_name(n), cpus, gpus, host, token_auth) for n in names]


def ray_executable() -> str:
    """The ``ray`` CLI of the Python that runs rlkit (the same Ray version)."""
    beside = Path(sys.executable).parent / "ray"
    found = str(beside) if beside.exists() else shutil.which("ray")
    if not found:
        raise WorkFailedError("the `ray` command is not installed", "pip install 'ray[default]'")
    return found


def _free_ports(count: int, taken: set[int]) -> list[int]:
    """``count`` distinct ports that nothing listens on now; the sockets stay
    open until all are chosen, so the kernel cannot hand one out twice."""
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("", 0))
            port = sock.getsockname()[1]
            if port not in taken:
                ports.append(port)
    finally:
        for sock in sockets:
            sock.close()
    return ports


def ray_start_plan(spec: LocalSpec, temp_dir: str | None = None, taken: set[int] | None = None) -> LocalPlan:
    """Pick ports and build the ``ray start`` command for ``spec``."""
    ports = dict(zip(PORT_NAMES, _free_ports(len(PORT_NAMES), taken or set())))
    # /tmp rather than $TMPDIR: a long TMPDIR would push Ray's socket paths
    # past the unix limit.
    temp_dir = temp_dir or f"/tmp/rlkit-{spec.name[:16]}-XXXXXXXX"
    command = [ray_executable(), "start", "--head", "--temp-dir", temp_dir, "--dashboard-host", spec.host]
    command += ["--include-dashboard", "true", "--disable-usage-stats", "--log-style", "record", "--log-color", "false"]
    for key, flag in _PORT_FLAGS.items():
        command += [flag, str(ports[key])]
    command += ["--min-worker-port", "0", "--max-worker-port", "0"]
    if spec.cpus is not None:
        command += ["--num-cpus", str(spec.cpus)]
    if spec.gpus is not None:
        command += ["--num-gpus", str(spec.gpus)]
    env = {var: str(ports[key]) for key, var in _PORT_ENVS.items()}
    env[auth.MODE_ENV] = "token" if spec.token_auth else "disabled"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    if spec.host in LOOPBACK_HOSTS:
        env.update(LOOPBACK_ENV)
    return LocalPlan(spec, ports, temp_dir, command, env)


# What `ray start` passes on from the launching shell: where programs,
# libraries, the home directory and the locale are, and which Python
# environment is active. Nothing else: a job must not see the launching
# user's RLKIT_HOME, cloud credentials or another cluster's RAY_* settings.
def _start_env(plan_: LocalPlan, token_path: Path | None, marker: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in procs.INHERITED_ENV or k.startswith("LC_")}
    env.update(plan_.env)
    if token_path:
        env[auth.TOKEN_PATH_ENV] = str(token_path)
    env[procs.MARKER_ENV] = marker
    # Jobs run `python ...` from the raylet's PATH: let that be this Python,
    # the one that has Ray and rlkit installed.
    env["PATH"] = os.pathsep.join([str(Path(plan_.command[0]).parent), os.environ.get("PATH", os.defpath)])
    return env


def _start(spec: LocalSpec, report: Progress, deadline: float) -> ClusterRecord:
    report(spec.name, "choosing ports")
    marker = procs.cluster_marker(spec.name) + uuid.uuid4().hex
    with ExitStack() as undo:
        with locks.hold("ports", 60.0, f"{spec.name}: another rlkit holds the port lock"):
            taken = {p for r in list_records() for p in r.ports.values()}
            temp_dir = tempfile.mkdtemp(prefix=f"rlkit-{spec.name[:16]}-", dir="/tmp")
            undo.callback(shutil.rmtree, temp_dir, ignore_errors=True)
            plan_ = ray_start_plan(spec, temp_dir, taken)
            token_path = auth.create_token_file(spec.name) if spec.token_auth else None
            record = ClusterRecord(
                name=spec.name, provider=NAME, address=plan_.dashboard_url, dashboard_url=plan_.dashboard_url,
                state="starting", token_path=str(token_path) if token_path else None, ports=plan_.ports,
                resources={k: float(v) for k, v in (("CPU", spec.cpus), ("GPU", spec.gpus)) if v is not None},
                temp_dir=temp_dir, process_marker=marker,
            )
            # Saved before `ray start`, so that a concurrent launch sees these ports as taken.
            save_record(record)
            undo.callback(_discard, record)
        report(spec.name, "starting Ray")
        _ray_start(plan_, _start_env(plan_, token_path, marker), deadline)
        report(spec.name, "waiting for the dashboard and agent")
        record.gcs_address = _wait_until_ready(record, deadline)
        record.pids = procs.find_processes(marker)
        record.state = "up"
        undo.pop_all()
    return record


def _ray_start(plan_: LocalPlan, env: dict[str, str], deadline: float) -> None:
    name = plan_.spec.name
    try:
        result = subprocess.run(
            plan_.command, check=False, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=max(1.0, deadline - time.monotonic()),
        )
    except subprocess.TimeoutExpired:
        raise WorkFailedError(f"{name}: `ray start` did not finish in time") from None
    if result.returncode != 0:
        raise WorkFailedError(f"{name}: `ray start` failed: {_last_error(result.stdout)}")


def _last_error(output: str) -> str:
    """The most telling line of ``ray start``'s output."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in output.splitlines()]
    lines = [line for line in lines if line]
    for line in reversed(lines):
        if re.search(r"error|exception|failed", line, re.IGNORECASE):
            return line
    return lines[-1] if lines else "no output"


def _wait_until_ready(record: ClusterRecord, deadline: float) -> str:
    """Wait until the dashboard sees the head node alive and the head's
    agent (which runs submitted jobs) answers; return the GCS address (on
    the node's IP: Ray advertises that rather than loopback)."""
    token = auth.token_source(record.token_path).read()
    agent_url = f"http://127.0.0.1:{record.ports['dashboard_agent_http']}"
    gcs_address, last = None, "no answer yet"
    while time.monotonic() < deadline:
        try:
            if gcs_address is None:
                nodes = dashboard.get_json(record.dashboard_url, "/api/v0/nodes", token, timeout=5.0)
                heads = [n for n in nodes["data"]["result"]["result"] if n["is_head_node"] and n["state"] == "ALIVE"]
                gcs_address = f"{heads[0]['node_ip']}:{record.ports['gcs']}" if heads else None
            if gcs_address is not None:
                # The agent registers itself for job submission as soon as it serves.
                dashboard.get(agent_url, "/api/healthz", None, timeout=5.0)
                return gcs_address
        except dashboard.DashboardError as err:
            last = str(err)
        except (KeyError, TypeError):
            last = "the dashboard is not ready"
        time.sleep(0.5)
    raise WorkFailedError(f"{record.name}: Ray started but did not become ready in time ({last})")


def _discard(record: ClusterRecord) -> None:
    """Undo a launch that failed half-way."""
    stop(record)
    delete_record(record.name)


def running_processes(record: ClusterRecord) -> list[ProcessRef]:
    """The cluster's processes that run now: those that carry its name's
    marker (found even when its record is lost), those that carry the
    record's marker, and those recorded at launch that still run."""
    markers = [procs.cluster_marker(record.name)] + ([record.process_marker] if record.process_marker else [])
    found = {r.pid: r for marker in markers for r in procs.find_processes(marker)}
    for ref in record.pids:
        if ref.pid not in found and procs.is_running(ref):
            found[ref.pid] = ref
    return sorted(found.values(), key=lambda r: r.pid)


def stop(record: ClusterRecord, grace_s: float = STOP_GRACE_S) -> StopResult:
    """Stop exactly this cluster's processes, raylet first and GCS last (as
    ``ray stop`` orders them, so agents do not fight a vanished raylet), then
    delete its temp dir and token. Never touches another cluster."""
    refs = running_processes(record)
    temp_dir = record.temp_dir or procs.temp_dir_of(refs)
    by_role: dict[str, list[ProcessRef]] = {"raylet": [], "other": [], "gcs_server": []}
    for ref in refs:
        name = procs.command_name(ref)
        by_role[name if name in by_role else "other"].append(ref)
    survivors = procs.terminate(list(by_role.values()), grace_s)
    # Workers that the raylet forked while it was being stopped.
    survivors += procs.terminate([running_processes(record)], 2.0)
    if survivors:
        raise WorkFailedError(
            f"{record.name}: {len(survivors)} processes survived SIGKILL: "
            + ", ".join(str(r.pid) for r in survivors)
        )
    if temp_dir and Path(temp_dir).name.startswith("rlkit-"):
        shutil.rmtree(temp_dir, ignore_errors=True)
    # A broken record has lost the token's path, but not where rlkit keeps it.
    token_path = record.token_path or (str(auth.token_file(record.name)) if record.state == "broken" else None)
    if token_path:
        Path(token_path).unlink(missing_ok=True)
    return StopResult(record.name, len(refs), already_gone=not refs)


class LocalProvider(Provider):
    """Ray heads on this machine (see the module's docstring)."""

    name = NAME

    def plan(self, spec: LocalSpec) -> list[str]:
        plan_ = ray_start_plan(spec)
        env = " ".join(f"{k}={v}" for k, v in plan_.env.items())
        return [
            f"{spec.name}: dashboard {plan_.dashboard_url}, token auth {'on' if spec.token_auth else 'OFF'}",
            f"  {env} {shlex.join(plan_.command)}",
        ]

    def start(self, spec: LocalSpec, report: Progress, deadline: float) -> ClusterRecord:
        return _start(spec, report, deadline)

    def discard(self, record: ClusterRecord) -> None:
        _discard(record)

    def describe_stop(self, record: ClusterRecord) -> list[str]:
        """What stopping this cluster ends, for the confirmation prompt."""
        refs = running_processes(record)
        if not refs:
            return ["no processes run (already stopped)"]
        pids = ", ".join(str(r.pid) for r in refs)
        lines = [f"{len(refs)} processes: {pids}"]
        if record.temp_dir:
            lines.append(f"temp dir {record.temp_dir} (deleted)")
        return lines

    def stop(self, record: ClusterRecord) -> StopResult:
        return stop(record)

    def reconnect(self, record: ClusterRecord) -> ClusterRecord | None:
        # The dashboard is reached directly: nothing to reopen.
        return None

    def runs_base(self, working_dir: Path) -> str:
        # The cluster shares this machine: runs land in the project's runs/, as with `rlkit train`.
        return str(working_dir / "runs")


provider = LocalProvider()
