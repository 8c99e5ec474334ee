"""The on-prem provider: a Ray head and workers on machines reached over SSH.

Ray's own cluster launcher does the work: ``launch_onprem`` renders
``cluster_configs/onprem.yaml`` (a ``ray up`` config for the local provider)
and runs ``ray up``; ``stop`` runs ``ray down``. Token authentication is
always on: each launch makes a fresh token (0600, under $RLKIT_HOME/tokens),
the config's ``file_mounts`` copy it to every node, and every ``ray start``
runs with ``RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=<that copy>``.

A cluster's files live in ``$RLKIT_HOME/onprem/NAME/``: ``cluster.yaml``
(the rendered config, the record's ``config_path``), ``launcher/`` (ray up's
own state and config cache: RAY_TMPDIR and TMPDIR of ray up and ray down),
and the output of
``ray up`` and ``ray down`` in ``launch.log`` and ``teardown.log``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from rlkit import paths
from rlkit.clusters import auth, dashboard, locks, registry
from rlkit.files import atomic_write
from rlkit.clusters.local import is_up, ray_executable
from rlkit.clusters.providers import StopResult
from rlkit.clusters.records import ClusterRecord, check_name, delete_record, save_record
from rlkit.clusters.ssh import SshLogin, failure_line, in_ray_shell
from rlkit.errors import BadInputError, WorkFailedError

PROVIDER = "onprem"
DEFAULT_TEMPLATE = Path(__file__).resolve().parents[3] / "cluster_configs" / "onprem.yaml"
GCS_PORT = 6379
DASHBOARD_PORT = 8265
LOCK_TIMEOUT_S = 120.0
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

Progress = Callable[[str, str], None]


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
    return paths.rlkit_home() / PROVIDER / check_name(name)


# ------------------------------------------------------------------ render


def render_onprem_config(spec: OnPremSpec, token_path: Path | str) -> dict[str, Any]:
    """The ``ray up`` config for ``spec``; ``token_path`` is the token file here."""
    _check_spec(spec)
    try:
        config = yaml.safe_load(Path(spec.template).read_text(encoding="utf-8"))
    except OSError as err:
        raise BadInputError(f"cluster template {spec.template}: {err.strerror}", "pass --config PATH") from None
    except yaml.YAMLError as err:
        first = str(err).strip().splitlines()[0]
        raise BadInputError(f"cluster template {spec.template} is not valid YAML: {first}") from None
    if not isinstance(config, dict) or (config.get("provider") or {}).get("type") != "local":
        raise BadInputError(
            f"cluster template {spec.template} is not an on-prem config", "it needs provider: {type: local}"
        )

    head = _resolve(spec.head)
    workers = [_resolve(w) for w in spec.workers]
    node_token = _node_token_path(spec.name)
    values = {
        "head_ip": head,
        "gcs_port": str(spec.gcs_port),
        "dashboard_port": str(spec.dashboard_port),
        "token_path": f"$HOME/{node_token}",
    }
    key = str(Path(spec.ssh_key).expanduser().resolve())
    config["cluster_name"] = spec.name
    config["provider"] = {**config["provider"], "head_ip": head, "worker_ips": workers}
    config["auth"] = {**(config.get("auth") or {}), "ssh_user": spec.ssh_user, "ssh_private_key": key}
    config["file_mounts"] = {**(config.get("file_mounts") or {}), f"~/{node_token}": str(token_path)}
    for field_name, commands in config.items():
        if field_name.endswith("_commands"):
            config[field_name] = [_fill(str(c), values, spec.template, field_name) for c in commands or []]
    return config


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
    """An IP address: Ray's local provider and --node-ip-address want one."""
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
    *,
    ssh_timeout_s: float = 10.0,
    up_timeout_s: float = 600.0,
    join_timeout_s: float = 180.0,
) -> OnPremLaunch:
    """Start the cluster with ``ray up``, wait until every node has joined,
    and register it; a name that is up already is left as it is.

    Raises ``SshKeyError``/``BadInputError`` for bad input, ``SshLoginError``
    when a host does not let rlkit in within ``ssh_timeout_s``, and
    ``WorkFailedError`` when ``ray up`` fails or nodes do not join in time
    (after stopping what did start).
    """
    report = progress or (lambda _name, _stage: None)
    # Rendered once before anything is made, to fail on bad input first.
    config = render_onprem_config(spec, "")
    with locks.cluster_lock(spec.name, LOCK_TIMEOUT_S):
        previous = registry.claim_name(spec.name, PROVIDER)
        if previous and is_up(previous):
            report(spec.name, "already up")
            return OnPremLaunch(previous, len(alive_nodes(previous)), already_up=True)
        if previous:
            report(spec.name, "clearing the stopped cluster")
            stop(previous)
            delete_record(spec.name)
        head, workers = config["provider"]["head_ip"], config["provider"]["worker_ips"]
        report(spec.name, "checking SSH logins")
        SshLogin(spec.ssh_user, Path(config["auth"]["ssh_private_key"])).check([head, *workers], ssh_timeout_s)

        workdir = paths.private_dir(workdir_for(spec.name))
        token_path = auth.create_token_file(spec.name)
        config = render_onprem_config(spec, token_path)
        config_path = workdir / "cluster.yaml"
        atomic_write(config_path, yaml.safe_dump(config, sort_keys=False), mode=0o600)
        dashboard_url = f"http://{_url_host(head)}:{spec.dashboard_port}"
        record = ClusterRecord(
            name=spec.name,
            provider=PROVIDER,
            address=dashboard_url,
            dashboard_url=dashboard_url,
            state="starting",
            token_path=str(token_path),
            gcs_address=f"{_url_host(head)}:{spec.gcs_port}",
            ports={"gcs": spec.gcs_port, "dashboard": spec.dashboard_port},
            ssh={"user": spec.ssh_user, "key": config["auth"]["ssh_private_key"]},
            config_path=str(config_path),
        )
        # Saved before `ray up`, so that an interrupted launch can be torn down.
        save_record(record)
        try:
            report(spec.name, f"ray up (log: {workdir / 'launch.log'})")
            _ray_cli(workdir, ["up", "-y", "--no-config-cache", str(config_path)], "launch.log", up_timeout_s)
            report(spec.name, f"waiting for {1 + len(workers)} nodes")
            alive = wait_for_nodes(record, 1 + len(workers), timeout_s=join_timeout_s)
        except BaseException:
            _discard(record)
            raise
        record.state = "up"
        registry.register(record)
        report(spec.name, "up")
        return OnPremLaunch(record, alive)


def _discard(record: ClusterRecord) -> None:
    """Undo a launch that failed half-way; the launch log stays for reading."""
    try:
        stop(record, keep_logs=True)
    except WorkFailedError:
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
            user, head = (record.ssh or {}).get("user", "USER"), urlsplit(record.dashboard_url).hostname
            raise WorkFailedError(
                f"{record.name}: {alive} of {expected} nodes alive after {timeout_s:.0f} s{why}",
                f"the head's autoscaler log says why: ssh {user}@{head} "
                "'tail -n 50 /tmp/ray/session_latest/logs/monitor.*'",
            )
        time.sleep(2.0)


# ------------------------------------------------------------------ stop


def describe_stop(record: ClusterRecord) -> list[str]:
    """What stopping this cluster ends, for the confirmation prompt."""
    try:
        provider = _load_config(record)["provider"]
    except BadInputError as err:
        return [str(err)]
    workers = provider["worker_ips"]
    user = (record.ssh or {}).get("user", "?")
    lines = [f"Ray on head {provider['head_ip']} and {len(workers)} worker(s) {', '.join(workers)}, as {user} over SSH"]
    if record.config_path:
        lines.append(f"work dir {Path(record.config_path).parent} (deleted)")
    return lines


def stop(record: ClusterRecord, *, timeout_s: float = 300.0, keep_logs: bool = False) -> StopResult:
    """Stop Ray on every node: ``ray down`` for the head; Ray's local
    provider only marks workers as terminated, so rlkit runs ``ray stop``
    on each worker itself. Removes the token copies on the nodes, then the
    token and the work dir here (the work dir stays with ``keep_logs``)."""
    config = _load_config(record)
    head, workers = config["provider"]["head_ip"], config["provider"]["worker_ips"]
    was_up = is_up(record)
    workdir = Path(str(record.config_path)).parent
    node_token = f"~/{shlex.quote(_node_token_path(record.name))}"
    commands = {ip: in_ray_shell(f"ray stop; rm -f {node_token}") for ip in workers}
    commands[head] = f"rm -f {node_token}"
    login = SshLogin(config["auth"]["ssh_user"], Path(config["auth"]["ssh_private_key"]))

    failures = []
    # Head first: its autoscaler would restart workers stopped before it.
    try:
        _ray_cli(workdir, ["down", "-y", str(record.config_path)], "teardown.log", timeout_s)
    except WorkFailedError as err:
        failures.append(f"{head}: {err.message}")
    results = login.run_all(commands, timeout_s=60.0)
    failures += [f"{ip}: {failure_line(proc)}" for ip, proc in results.items() if proc.returncode]
    if failures:
        raise WorkFailedError(
            f"{record.name}: stopping Ray failed on {'; '.join(failures)}",
            f"retry the teardown, or run `ray stop` on those hosts; files kept in {workdir}",
        )
    if record.token_path:
        Path(record.token_path).unlink(missing_ok=True)
    if not keep_logs:
        shutil.rmtree(workdir, ignore_errors=True)
    return StopResult(record.name, 1 + len(workers), already_gone=not was_up, unit="nodes")


def _load_config(record: ClusterRecord) -> dict[str, Any]:
    try:
        return yaml.safe_load(Path(str(record.config_path)).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        raise BadInputError(
            f"{record.name}: its cluster config {record.config_path} is missing or unreadable",
            "stop Ray on its hosts with `ray stop`, then delete rlkit's record",
        ) from None


# ------------------------------------------------------------------ ray cli


def _ray_cli(workdir: Path, args: list[str], log_name: str, timeout_s: float) -> None:
    """Run ``ray ARGS`` (this environment's Ray) with its state kept in ``workdir``."""
    launcher = str(paths.private_dir(workdir / "launcher"))
    env = {
        **os.environ,
        # ray up keeps its cluster state in RAY_TMPDIR and its config cache in TMPDIR.
        "RAY_TMPDIR": launcher,
        "TMPDIR": launcher,
        # With the local provider, Ray 2.60's autoscaler v2 (ray up's
        # default) never starts the listed workers; v1 does.
        "RAY_UP_enable_autoscaler_v2": "0",
    }
    log_path = workdir / log_name
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [ray_executable(), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            # ray up runs ssh and rsync children: end the whole group it leads.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise WorkFailedError(
                f"`ray {args[0]}` did not finish within {timeout_s:.0f} s", f"its output: {log_path}"
            ) from None
    if code != 0:
        why = _failure_reason(log_path.read_text(errors="replace")) or f"exit status {code}"
        raise WorkFailedError(f"`ray {args[0]}` failed: {why}", f"its output: {log_path}")


def _failure_reason(output: str) -> str:
    """Ray's own verdict, with the first error from the node that caused it
    (``Failed to setup head node: No such option '--bogus'.``)."""
    lines = [ln.strip() for ln in _ANSI.sub("", output).splitlines() if ln.strip()]
    errors = [ln.removeprefix("Error:").strip() for ln in lines if ln.startswith("Error:")]
    if not errors:
        return lines[-1] if lines else ""
    if len(errors) == 1:
        return errors[0]
    return f"{errors[-1].rstrip('.')}: {errors[0]}"
