"""The SSH tunnel to an on-prem head's dashboard, kept by rlkit.

The head's dashboard listens on the head's loopback only, so that the token
never crosses the network in clear; rlkit reaches it through
``ssh -N -L 127.0.0.1:PORT:127.0.0.1:DASHBOARD`` run in the background (as
``kubectl port-forward`` serves KubeRay). The record keeps the tunnel's
process and local port, and the address registered for the cluster is
``http://127.0.0.1:PORT``. ``ensure`` is the one place that brings a tunnel
back when it is gone: every lookup of a cluster goes through it.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from rlkit import paths
from rlkit.clusters import address_file, locks, procs
from rlkit.clusters.records import ClusterRecord, load_record, save_record
from rlkit.clusters.ssh import SshLogin, check_host_key, failure_line
from rlkit.errors import WorkFailedError

TUNNEL_PORT = "tunnel"
LOCK_TIMEOUT_S = 30.0


def dashboard_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def is_open(record: ClusterRecord) -> bool:
    """Whether the record's tunnel process runs (a pid check, no traffic)."""
    return record.tunnel is not None and procs.is_running(record.tunnel)


def start(record: ClusterRecord, timeout_s: float) -> ClusterRecord:
    """Open the tunnel of ``record`` (on its recorded local port when that is
    free, else a new one) and return the record with the tunnel in it."""
    ssh = record.ssh or {}
    login = SshLogin(ssh["user"], Path(ssh["key"]))
    head, remote_port = ssh["head"], record.ports["dashboard"]
    port = record.ports[TUNNEL_PORT]
    if not port_free(port):
        port = free_port()
    forward = ["-N", "-L", f"127.0.0.1:{port}:127.0.0.1:{remote_port}", "-o", "ExitOnForwardFailure=yes",
               "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3"]  # fmt: skip
    log = log_path(record.name)
    with open(log, "w", encoding="utf-8") as out:
        # Its own session: the tunnel outlives the rlkit command that opened it.
        proc = subprocess.Popen(
            login.argv(head, timeout_s, *forward), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + timeout_s + 5
    while not _answers(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            _end(proc)
            output = log.read_text(errors="replace")
            check_host_key(head, output)
            why = failure_line(subprocess.CompletedProcess([], proc.returncode or 255, "", output))
            raise WorkFailedError(f"{record.name}: cannot open the SSH tunnel to {head}: {why}", f"see {log}")
        time.sleep(0.05)
    tunnel = procs.process_ref(proc.pid)
    assert tunnel is not None  # it answered just now
    url = dashboard_url(port)
    return replace(record, tunnel=tunnel, ports={**record.ports, TUNNEL_PORT: port}, address=url, dashboard_url=url)


def ensure(record: ClusterRecord, timeout_s: float = 5.0,
           start: Callable[[ClusterRecord, float], ClusterRecord] = start) -> ClusterRecord:
    """The record with a running tunnel: as it is when its tunnel runs, else
    with the tunnel opened again by ``start`` (SSH's by default; KubeRay's
    is kubectl proxy), and the address file's line rewritten if the local
    port had to change. Only for a cluster that is up."""
    if record.state != "up" or record.tunnel is None or is_open(record):
        return record
    with locks.hold(f"tunnel-{record.name}", LOCK_TIMEOUT_S, f"{record.name}: another rlkit is opening its tunnel"):
        # Read again under the lock: another rlkit may have opened it already.
        current = load_record(record.name)
        if current is None or current.state != "up" or current.tunnel is None or is_open(current):
            return current or record
        reopened = start(current, timeout_s)
        save_record(reopened)
        if reopened.address != current.address:
            address_file.set_entry(reopened.name, reopened.address, replaces=current.address)
        return reopened


def stop(record: ClusterRecord) -> None:
    """End the tunnel process, if it is still the one rlkit started."""
    if record.tunnel is not None:
        procs.terminate([[record.tunnel]], grace_s=5.0)
    log_path(record.name).unlink(missing_ok=True)


def log_path(name: str) -> Path:
    """The tunnel's own output, where one that fails to open says why."""
    return paths.private_dir(paths.rlkit_home() / "tunnels") / f"{name}.log"


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        # As ssh binds its listener: the connections of an ended tunnel
        # linger in TIME_WAIT, and must not cost the cluster its address.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A local port free now (the tunnel's ExitOnForwardFailure catches a race)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

