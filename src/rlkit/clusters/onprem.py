"""The on-prem provider: a Ray head and workers on machines reached over SSH.

rlkit drives the nodes itself, over SSH with host keys checked (see
``ssh``), rather than with Ray's cluster launcher: ``ray up`` runs ssh with
``StrictHostKeyChecking=no`` and ``UserKnownHostsFile=/dev/null`` and no way
to change it, copies the user's private key to the head, and its autoscaler
then logs in to the workers from there, unchecked too.

``launch_onprem`` (through ``launching``, as every provider) renders ``cluster_configs/onprem.yaml`` (the node
commands, in the cluster launcher's format) and runs them: the token goes to
every node over SSH, then the head's commands, then the workers'. Every
``ray start`` runs with a clean, explicit environment (``{{ray_env}}``):
token authentication on and a marker unique to this launch, by which
``stop`` ends this cluster's processes and no other's. The head's dashboard
listens on the head's loopback only; rlkit reaches it through an SSH tunnel
it keeps (``tunnel``), so the token never crosses the network in clear.

A cluster's files live in ``$RLKIT_HOME/onprem/NAME/``: ``cluster.yaml``
(the rendered config, the record's ``config_path``) and the nodes' output
in ``launch.log``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rlkit import paths
from rlkit.files import atomic_write
from rlkit.clusters import auth, dashboard, launching, tunnel
from rlkit.clusters.procs import INHERITED_ENV, MARKER_ENV
from rlkit.clusters.provider import REMOTE_RUNS_BASE, Progress, Provider, StopResult
from rlkit.clusters.records import ClusterRecord, check_name, delete_record, load_record, save_record
from rlkit.clusters.ssh import Notice, SshLogin, failure_line, in_ray_shell, trust_on_first_use
from rlkit.errors import BadInputError, RlkitError, WorkFailedError

NAME = "onprem"
DEFAULT_TEMPLATE = paths.cluster_template("onprem.yaml")
GCS_PORT = 6379
DASHBOARD_PORT = 8265
LOCK_TIMEOUT_S = 120.0
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_HEAD_COMMANDS = ("initialization_commands", "setup_commands", "head_setup_commands", "head_start_ray_commands")
_WORKER_COMMANDS = ("initialization_commands", "setup_commands", "worker_setup_commands", "worker_start_ray_commands")
_REQUIRED = ("head_start_ray_commands", "worker_start_ray_commands")
_DASHBOARD_HOST = re.compile(r"--dashboard-host[= ]\s*(\S+)")
_LOOPBACK = ("127.0.0.1", "localhost")
# What a dry run shows for the marker, which each launch makes anew.
MARKER_AT_LAUNCH = "<made at launch>"


class SshKeyError(BadInputError):
    """The SSH private key given for the cluster cannot be used."""


@dataclass(frozen=True)
class OnPremSpec:
    """What to start: hosts, the SSH login that reaches them, the template."""

    name: str
    head: str
    ssh_user: str
    ssh_key: Path
    workers: tuple[str, ...] = ()
    template: Path = DEFAULT_TEMPLATE
    gcs_port: int = GCS_PORT
    dashboard_port: int = DASHBOARD_PORT


@dataclass(frozen=True)
class OnPremLaunch:
    """``already_up`` is True when the name was up and nothing was started."""

    record: ClusterRecord
    nodes_alive: int
    already_up: bool = False


def workdir_for(name: str) -> Path:
    return paths.rlkit_home() / NAME / check_name(name)


# ------------------------------------------------------------------ render


def load_template(template: Path) -> dict[str, Any]:
    """The template, checked: a mapping with the node command lists, each a
    list of strings, no ``ray stop``, every ``ray start`` in ``{{ray_env}}``."""
    try:
        config = yaml.safe_load(Path(template).read_text(encoding="utf-8"))
    except OSError as err:
        raise BadInputError(f"cluster template {template}: {err.strerror}", "pass --config PATH") from None
    except yaml.YAMLError as err:
        first = str(err).strip().splitlines()[0]
        raise BadInputError(f"cluster template {template} is not valid YAML: {first}") from None
    if not isinstance(config, dict):
        raise BadInputError(
            f"cluster template {template} holds a {type(config).__name__}, not a mapping",
            f"start from {DEFAULT_TEMPLATE}",
        )
    provider = config.get("provider", {"type": "local"})
    if not isinstance(provider, dict) or provider.get("type") != "local":
        raise BadInputError(f"cluster template {template} is not an on-prem config", "it needs provider: {type: local}")
    missing = [k for k in _REQUIRED if k not in config]
    if missing:
        raise BadInputError(f"cluster template {template} has no {', '.join(missing)}", f"see {DEFAULT_TEMPLATE}")
    if config.get("file_mounts"):
        raise BadInputError(
            f"file_mounts in {template}: rlkit copies only the cluster's token to the nodes",
            "copy other files in setup_commands, or before launching",
        )
    for field_name in dict.fromkeys(_HEAD_COMMANDS + _WORKER_COMMANDS):
        commands = config.get(field_name) or []
        if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
            raise BadInputError(f"{field_name} in {template} must be a list of command strings")
        for command in commands:
            _check_command(command, field_name, template)
    return config


def _check_command(command: str, field_name: str, template: Path) -> None:
    where = f"{field_name} of {template}"
    if re.search(r"\bray\s+stop\b", command):
        raise BadInputError(
            f"{where} runs `ray stop`, which stops every Ray on the host, other users' too",
            "remove it: rlkit stops this cluster's processes only",
        )
    if re.search(r"\bray\s+start\b", command) and not re.search(r"\{\{\s*ray_env\s*\}\}", command):
        raise BadInputError(
            f"a `ray start` in {where} runs without {{{{ray_env}}}}", "write it as `{{ray_env}} ray start ...`"
        )
    host = _DASHBOARD_HOST.search(command)
    if host and host.group(1) not in _LOOPBACK:
        raise BadInputError(
            f"{where} opens the dashboard on {host.group(1)}: its token would cross the network in clear",
            "use --dashboard-host=127.0.0.1 (rlkit reaches it through an SSH tunnel)",
        )


def render_onprem_config(spec: OnPremSpec, marker: str) -> dict[str, Any]:
    """The config rlkit runs for ``spec``: the template with the hosts, the
    SSH login and ``marker`` (this launch's process marker) filled in."""
    _check_spec(spec)
    config = load_template(spec.template)
    head = _resolve(spec.head)
    workers = [_resolve(w) for w in spec.workers]
    node_token = f"$HOME/{_node_token_path(spec.name)}"
    values = {
        "head_ip": head,
        "gcs_port": str(spec.gcs_port),
        "dashboard_port": str(spec.dashboard_port),
        "token_path": node_token,
        "ray_env": _ray_env(marker, node_token),
    }
    key = str(Path(spec.ssh_key).expanduser().resolve())
    config["cluster_name"] = spec.name
    config["provider"] = {**config.get("provider", {}), "type": "local", "head_ip": head, "worker_ips": workers}
    config["auth"] = {**(config.get("auth") or {}), "ssh_user": spec.ssh_user, "ssh_private_key": key}
    for field_name in dict.fromkeys(_HEAD_COMMANDS + _WORKER_COMMANDS):
        config[field_name] = [_fill(c, values, spec.template, field_name) for c in config.get(field_name) or []]
    return config


def _ray_env(marker: str, node_token: str) -> str:
    """The whole environment of ``ray start`` on a node: nothing from the
    login shell but what running Ray needs (``procs.INHERITED_ENV``, as for
    a local head), the token settings, the marker. A variable is passed only
    when it is set: an empty CUDA_VISIBLE_DEVICES would hide every GPU."""
    kept = " ".join(f'${{{v}+"{v}=${v}"}}' for v in ("PATH", *INHERITED_ENV))
    return (
        f'env -i {kept} LANG="${{LANG:-C.UTF-8}}" {MARKER_ENV}={shlex.quote(marker)} '
        f'{auth.MODE_ENV}=token {auth.TOKEN_PATH_ENV}="{node_token}"'
    )


def _fill(command: str, values: dict[str, str], template: Path, field_name: str) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            known = ", ".join("{{" + k + "}}" for k in values)
            raise BadInputError(
                f"unknown placeholder {match.group(0)} in {field_name} of {template}", f"known: {known}"
            )
        return values[match.group(1)]

    return _PLACEHOLDER.sub(one, command)


def _check_spec(spec: OnPremSpec) -> None:
    check_name(spec.name)
    key = Path(spec.ssh_key).expanduser()
    if not key.is_file():
        raise SshKeyError(f"SSH key {key} not found", "pass --ssh-key with the private key that logs in to the hosts")
    if not os.access(key, os.R_OK):
        raise SshKeyError(f"SSH key {key} is not readable by this user", "check its owner and mode (0600)")
    if not spec.ssh_user:
        raise BadInputError("no SSH user given", "pass --ssh-user")
    hosts = [spec.head, *spec.workers]
    if len(set(hosts)) != len(hosts):
        raise BadInputError(f"a host is listed twice in head {spec.head} and workers {','.join(spec.workers)}")


def _resolve(host: str) -> str:
    """An IP address: ``ray start --node-ip-address`` wants one."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return socket.gethostbyname(host)
    except OSError:
        raise BadInputError(f"cannot resolve host {host!r}", "pass an IP address or a resolvable hostname") from None


def _node_token_path(name: str) -> str:
    """Where the token's copy lives on every node, relative to the SSH user's home."""
    return f".rlkit/node-tokens/{name}"


def _url_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


# ------------------------------------------------------------------ launch


def launch_onprem(
    spec: OnPremSpec,
    progress: Progress | None = None,
    notice: Notice | None = None,
    *,
    ssh_timeout_s: float = 10.0,
    up_timeout_s: float = 600.0,
    join_timeout_s: float = 180.0,
) -> OnPremLaunch:
    """Start the cluster, wait until every node has joined, and register
    it; a name that is up already is left as it is. ``notice`` gets the
    lines to show the user once (a new host's key fingerprint).

    Raises ``SshKeyError``/``BadInputError`` for bad input, ``HostKeyError``
    for a host whose key changed, ``SshLoginError`` when a host does not let
    rlkit in within ``ssh_timeout_s``, and ``WorkFailedError`` when a node's
    commands fail or nodes do not join in time (after stopping what did start).
    """
    # Rendered once before anything is made, to fail on bad input first.
    render_onprem_config(spec, "")
    provider_ = OnPremProvider(notice, ssh_timeout_s=ssh_timeout_s, up_timeout_s=up_timeout_s,
                               join_timeout_s=join_timeout_s)
    launched = launching.launch(provider_, spec, progress, timeout_s=up_timeout_s + join_timeout_s,
                                lock_timeout_s=LOCK_TIMEOUT_S)
    return OnPremLaunch(launched.record, len(alive_nodes(launched.record)), launched.already_up)


class OnPremProvider(Provider):
    """Ray on the user's machines over SSH, reached through an SSH tunnel.
    ``notice`` gets the lines to show the user once (a new host's key
    fingerprint); the timeouts bound one SSH login, one round of node
    commands, and the wait for the nodes to join."""

    name = NAME

    def __init__(
        self, notice: Notice | None = None, *, ssh_timeout_s: float = 10.0, up_timeout_s: float = 600.0,
        join_timeout_s: float = 180.0,
    ) -> None:
        self.notice: Notice = notice or (lambda _line: None)
        self.ssh_timeout_s = ssh_timeout_s
        self.up_timeout_s = up_timeout_s
        self.join_timeout_s = join_timeout_s

    def plan(self, spec: OnPremSpec) -> list[str]:
        rendered = render_onprem_config(spec, MARKER_AT_LAUNCH)
        return yaml.safe_dump(rendered, sort_keys=False).splitlines()

    def start(self, spec: OnPremSpec, report: Progress, deadline: float) -> ClusterRecord:
        def left(limit: float) -> float:
            return max(1.0, min(limit, deadline - time.monotonic()))

        config = render_onprem_config(spec, "")
        head, workers = config["provider"]["head_ip"], config["provider"]["worker_ips"]
        login = SshLogin(spec.ssh_user, Path(config["auth"]["ssh_private_key"]))
        report(spec.name, "checking SSH host keys and logins")
        trust_on_first_use([head, *workers], self.notice, self.ssh_timeout_s)
        login.check([head, *workers], self.ssh_timeout_s)

        workdir = paths.private_dir(workdir_for(spec.name))
        marker = f"{spec.name}-{secrets.token_hex(8)}"
        config = render_onprem_config(spec, marker)
        config_path = workdir / "cluster.yaml"
        atomic_write(config_path, yaml.safe_dump(config, sort_keys=False), mode=0o600)
        # A relaunch keeps its local port, so that its address stays the same.
        previous = load_record(spec.name)
        port = (previous.ports if previous else {}).get(tunnel.TUNNEL_PORT) or tunnel.free_port()
        record = ClusterRecord(
            name=spec.name,
            provider=NAME,
            address=tunnel.dashboard_url(port),
            dashboard_url=tunnel.dashboard_url(port),
            state="starting",
            token_path=str(auth.create_token_file(spec.name)),
            gcs_address=f"{_url_host(head)}:{spec.gcs_port}",
            ports={"gcs": spec.gcs_port, "dashboard": spec.dashboard_port, tunnel.TUNNEL_PORT: port},
            process_marker=marker,
            ssh={"user": spec.ssh_user, "key": str(login.key), "head": head},
            config_path=str(config_path),
        )
        # Saved before anything starts, so that an interrupted launch can be torn down.
        save_record(record)
        try:
            log = workdir / "launch.log"
            report(spec.name, "copying the token to the nodes")
            _copy_token(login, record, [head, *workers], left(self.up_timeout_s))
            report(spec.name, f"starting the head (log: {log})")
            _run_nodes(record, login, {head: _commands(config, _HEAD_COMMANDS)}, log, left(self.up_timeout_s))
            record = tunnel.start(record, self.ssh_timeout_s)
            save_record(record)
            if workers:
                report(spec.name, f"starting {len(workers)} workers")
                commands = {w: _commands(config, _WORKER_COMMANDS) for w in workers}
                _run_nodes(record, login, commands, log, left(self.up_timeout_s))
            report(spec.name, f"waiting for {1 + len(workers)} nodes")
            wait_for_nodes(record, 1 + len(workers), timeout_s=left(self.join_timeout_s))
        except BaseException:
            _discard(record)
            raise
        record.state = "up"
        return record

    def discard(self, record: ClusterRecord) -> None:
        _discard(record)

    def describe_stop(self, record: ClusterRecord) -> list[str]:
        """What stopping this cluster ends, for the confirmation prompt."""
        try:
            provider = _load_config(record)["provider"]
        except BadInputError as err:
            return [str(err)]
        workers = provider["worker_ips"]
        user = (record.ssh or {}).get("user", "?")
        lines = [
            f"this cluster's Ray processes on head {provider['head_ip']} and {len(workers)} worker(s) "
            f"{', '.join(workers)}, as {user} over SSH (other Ray processes there are left alone)"
        ]
        if record.config_path:
            lines.append(f"work dir {Path(record.config_path).parent} (deleted) and the SSH tunnel to the head")
        return lines

    def stop(self, record: ClusterRecord) -> StopResult:
        return stop(record)

    def reconnect(self, record: ClusterRecord) -> ClusterRecord | None:
        if record.tunnel is None or tunnel.is_open(record):
            return None
        return tunnel.ensure(record)

    def runs_base(self, working_dir: Path) -> str:
        return REMOTE_RUNS_BASE


provider = OnPremProvider()


def _commands(config: dict[str, Any], fields: tuple[str, ...]) -> str:
    """One node's commands, in order, as one login-shell command that stops at the first failure."""
    # Braces group each command without a subshell; the newline ends one that ends in a comment.
    return in_ray_shell(" && ".join(f"{{ {c}\n}}" for f in fields for c in config.get(f) or []) or "true")


def _copy_token(login: SshLogin, record: ClusterRecord, hosts: list[str], timeout_s: float) -> None:
    """Put the token on every node (0600), through ssh's stdin: never in a command line."""
    token = Path(str(record.token_path)).read_text(encoding="utf-8")
    target = shlex.quote(_node_token_path(record.name))
    command = f"umask 077 && mkdir -p ~/.rlkit/node-tokens && cat > ~/{target}"
    failed = {h: p for h, p in login.run_all({h: command for h in hosts}, timeout_s, stdin=token).items() if p.returncode}
    if failed:
        host, proc = next(iter(failed.items()))
        raise WorkFailedError(f"{record.name}: copying the token to {host} failed: {failure_line(proc)}")


def _run_nodes(record: ClusterRecord, login: SshLogin, commands: dict[str, str], log: Path, timeout_s: float) -> None:
    """Run each node's commands (all nodes at once), their output to ``log``.

    A node that fails gets one more try, after its processes of this
    cluster are ended: ``ray start`` gives a node 30 s (fixed) to register
    with the GCS, which a busy machine can miss, and Ray's own launcher
    retries a node too."""
    failed = _run_once(login, commands, log, timeout_s)
    if failed:
        login.run_all({host: _stop_command(record) for host in failed}, timeout_s)
        failed = _run_once(login, {host: commands[host] for host in failed}, log, timeout_s)
    if failed:
        host, proc = next(iter(failed.items()))
        raise WorkFailedError(f"{record.name}: starting Ray on {host} failed: {failure_line(proc)}", f"its output: {log}")


def _run_once(
    login: SshLogin, commands: dict[str, str], log: Path, timeout_s: float
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run each node's commands once; the nodes where they failed."""
    results = login.run_all(commands, timeout_s)
    with open(log, "a", encoding="utf-8") as out:
        for host, proc in results.items():
            out.write(f"===== {host}: exit status {proc.returncode}\n{proc.stdout}{proc.stderr}\n")
    return {host: proc for host, proc in results.items() if proc.returncode}


def _discard(record: ClusterRecord) -> None:
    """Undo a launch that failed half-way; the launch log stays for reading."""
    try:
        stop(record, keep_logs=True)
    except RlkitError:
        pass  # the launch's own error is the one to report
    delete_record(record.name)


# ------------------------------------------------------------------ nodes


def alive_nodes(record: ClusterRecord, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """The cluster's alive nodes as the head's dashboard lists them."""
    token = auth.token_source(record.token_path).read()
    query = "/api/v0/nodes?limit=10000&filter_keys=state&filter_predicates=%3D&filter_values=ALIVE"
    return dashboard.get_json(record.dashboard_url, query, token, timeout_s)["data"]["result"]["result"]


def wait_for_nodes(record: ClusterRecord, expected: int, *, timeout_s: float) -> int:
    """Poll the dashboard until ``expected`` nodes are alive; return how many are."""
    deadline = time.monotonic() + timeout_s
    alive, last_error = 0, ""
    while True:
        try:
            alive, last_error = len(alive_nodes(record)), ""
        except (dashboard.DashboardError, KeyError, TypeError) as err:
            last_error = str(err)
        if alive >= expected:
            return alive
        if time.monotonic() > deadline:
            why = f" ({last_error})" if last_error else ""
            raise WorkFailedError(
                f"{record.name}: {alive} of {expected} nodes alive after {timeout_s:.0f} s{why}",
                "a missing node's raylet log says why: /tmp/ray/session_latest/logs/raylet.out there",
            )
        time.sleep(2.0)


# ------------------------------------------------------------------ stop

# Ends the processes whose environment holds the marker, and their
# descendants (Ray's workers write their title over their environment), on
# one node: SIGTERM, then SIGKILL after 10 s; prints how many there were.
# Not `ray stop`, which ends every Ray process on the host.
_STOP_SCRIPT = r"""
m={entry}
roots=$(grep -lzxF "$m" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 | tr '\n' ' ')
pids=$(ps -eo pid=,ppid= | awk -v r="$roots" '
  BEGIN {{ n = split(r, a, " "); for (i = 1; i <= n; i++) k[a[i]] = 1 }}
  {{ pp[$1] = $2 }}
  END {{ do {{ c = 0; for (p in pp) if (!(p in k) && (pp[p] in k)) {{ k[p] = 1; c = 1 }} }} while (c); for (p in k) print p }}')
echo "stopping $(echo $pids | wc -w) processes"
[ -z "$pids" ] || kill -TERM $pids 2>/dev/null
for _ in $(seq 100); do
  alive=""; for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
  [ -z "$alive" ] && break; sleep 0.1
done
[ -z "$alive" ] || kill -KILL $alive 2>/dev/null
true
"""


def _stop_command(record: ClusterRecord) -> str:
    """The shell command that ends this cluster's processes on a node."""
    entry = shlex.quote(f"{MARKER_ENV}={record.process_marker}")
    return f"bash -c {shlex.quote(_STOP_SCRIPT.format(entry=entry))}"


def stop(record: ClusterRecord, *, timeout_s: float = 120.0, keep_logs: bool = False) -> StopResult:
    """Stop this cluster's processes on every node (by its marker), remove
    the token copies there, end the tunnel, then remove the token and the
    work dir here (the work dir stays with ``keep_logs``)."""
    config = _load_config(record)
    head, workers = config["provider"]["head_ip"], config["provider"]["worker_ips"]
    workdir = Path(str(record.config_path)).parent
    login = SshLogin(config["auth"]["ssh_user"], Path(config["auth"]["ssh_private_key"]))
    command = f"{_stop_command(record)} && rm -f ~/{shlex.quote(_node_token_path(record.name))}"
    results = login.run_all({ip: command for ip in [head, *workers]}, timeout_s)
    failures = [f"{ip}: {failure_line(proc)}" for ip, proc in results.items() if proc.returncode]
    if failures:
        raise WorkFailedError(
            f"{record.name}: stopping Ray failed on {'; '.join(failures)}",
            f"retry the teardown; files kept in {workdir}",
        )
    tunnel.stop(record)
    stopped = sum(int(p.stdout.split()[1]) for p in results.values() if p.stdout.startswith("stopping "))
    if record.token_path:
        Path(record.token_path).unlink(missing_ok=True)
    if not keep_logs:
        shutil.rmtree(workdir, ignore_errors=True)
    return StopResult(record.name, 1 + len(workers), already_gone=stopped == 0, unit="nodes")


def _load_config(record: ClusterRecord) -> dict[str, Any]:
    if not record.process_marker:
        raise BadInputError(
            f"{record.name}: launched by an older rlkit (no process marker in its record)",
            f"stop it with `ray down {record.config_path}`, then delete {record.name}'s record",
        )
    try:
        return yaml.safe_load(Path(str(record.config_path)).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        raise BadInputError(
            f"{record.name}: its cluster config {record.config_path} is missing or unreadable",
            "stop its Ray processes on its hosts by hand, then delete rlkit's record",
        ) from None
