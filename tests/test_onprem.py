"""The on-prem provider against real sshd test hosts: host keys, token auth, the tunnel, teardown."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from rlkit.cli import launch_onprem
from rlkit import paths
from rlkit.clusters import dashboard, onprem, registry
from rlkit.clusters.records import load_record
from rlkit.clusters.ssh import SshLoginError
from rlkit.errors import WorkFailedError
from tests.cli_helpers import one_error_line, run_rlkit
from tests.testhosts_fixture import SshHosts, start_hosts, stop_hosts

pytestmark = pytest.mark.timeout(300)

# What an idle test host runs: its sshd, the session asking, and ps itself.
IDLE = {"sshd", "bash", "ps"}


def host_processes(hosts: SshHosts, host) -> set[str]:
    result = hosts.ssh(host, "ps -eo comm=")
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def fingerprints(hosts: SshHosts) -> dict[str, str]:
    """Each test host's key fingerprint, as ``ssh-keygen -l`` shows it."""
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(hosts.ssh_config.parent / "known_hosts")], capture_output=True, text=True, check=True
    )
    return {line.split()[2]: line.split()[1] for line in listed.stdout.splitlines()}


def tunnels_to(ip: str) -> list[int]:
    """This user's ssh processes that forward a port to ``ip``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0] == b"ssh" and b"-L" in argv and any(a.endswith(f"@{ip}".encode()) for a in argv):
            found.append(int(cmdline.parent.name))
    return found


def other_key(tmp_path: Path) -> str:
    """A host key (type and key) that no test host has."""
    path = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def wait_gone(pid: int) -> None:
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} still runs")


def test_launch_two_nodes_through_tunnel_then_teardown(testhosts: SshHosts, tmp_path: Path) -> None:
    head, worker = testhosts.hosts
    # A Ray-like process of someone else on the head: `ray stop` would end it.
    foreign = testhosts.ssh(head, "cp /bin/sleep /tmp/raylet && { setsid /tmp/raylet 600 </dev/null >/dev/null 2>&1 & echo $!; }")
    assert foreign.returncode == 0, foreign.stderr
    foreign_pid = foreign.stdout.split()[0]
    args = ["--head", head.ip, "--workers", worker.ip, "--ssh-user", testhosts.user, "--ssh-key", str(testhosts.key)]
    try:
        launched = run_rlkit("launch", "onprem", "--name", "lab", *args, "--timeout", "120")
        assert launched.returncode == 0, launched.stderr
        # First contact: each host's key is recorded, its fingerprint shown once.
        known = subprocess.run(["ssh-keygen", "-l", "-f", str(paths.rlkit_home() / "known_hosts")],
                               capture_output=True, text=True, check=True).stdout
        for host in testhosts.hosts:
            fingerprint = fingerprints(testhosts)[host.ip]
            assert launched.stderr.count(fingerprint) == 1, launched.stderr
            assert f"{fingerprint} {host.ip}" in known

        record = load_record("lab")
        assert record is not None and record.tunnel is not None
        url = f"http://127.0.0.1:{record.ports['tunnel']}"
        assert record.dashboard_url == url and registry.get_cluster("lab").address == url
        assert sorted(n["node_ip"] for n in onprem.alive_nodes(record)) == sorted([head.ip, worker.ip])
        # The dashboard listens on the head's loopback only: not from the network.
        with pytest.raises(OSError):
            socket.create_connection((head.ip, 8265), timeout=3).close()
        # Token auth is on: the dashboard refuses a request without the token.
        with pytest.raises(dashboard.DashboardError) as refused:
            dashboard.get_json(record.dashboard_url, "/api/v0/nodes", None, timeout=5)
        assert refused.value.state == dashboard.AUTH_FAILED
        token_here = Path(str(record.token_path))
        assert stat.S_IMODE(token_here.stat().st_mode) == 0o600
        for host in testhosts.hosts:
            copy = testhosts.ssh(host, "stat -c %a ~/.rlkit/node-tokens/lab && cat ~/.rlkit/node-tokens/lab")
            assert copy.stdout.split() == ["600", token_here.read_text().strip()]
            assert "raylet" in host_processes(testhosts, host)
            # Ray runs with a clean environment: the login shell's variables stay out
            # (-n: the newest raylet, not the foreign one).
            environ = testhosts.ssh(host, "tr '\\0' '\\n' < /proc/$(pgrep -nx raylet)/environ | cut -d= -f1")
            names = set(environ.stdout.split())
            assert {"PATH", "RLKIT_CLUSTER_MARKER", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"} <= names, environ
            assert not names & {"OMP_NUM_THREADS", "PYTHONWARNINGS", "SSH_CONNECTION", "PWD", "SHLVL"}, names

        # The tunnel, gone, is opened again by the next command that looks the
        # cluster up: only to the head's recorded key, like every connection.
        os.kill(record.tunnel.pid, signal.SIGTERM)
        wait_gone(record.tunnel.pid)
        known_path = paths.rlkit_home() / "known_hosts"
        recorded = known_path.read_text()
        others = [ln for ln in recorded.splitlines() if not ln.startswith(f"{head.ip} ")]
        known_path.write_text("\n".join([*others, f"{head.ip} {other_key(tmp_path)}"]) + "\n")
        refused = run_rlkit("status", "lab", "--json")
        row = json.loads(refused.stdout)["clusters"][0]
        assert row["state"] == "UNREACHABLE" and f"host key of {head.ip}" in row["detail"], row
        assert str(known_path) in row["detail"]
        known_path.write_text(recorded)
        status = run_rlkit("status", "lab", "--json")
        assert status.returncode == 0, status.stderr
        row = json.loads(status.stdout)["clusters"][0]
        assert (row["state"], row["nodes_alive"]) == ("UP", 2), row
        reopened = load_record("lab")
        assert reopened.tunnel.pid != record.tunnel.pid and reopened.dashboard_url == url

        torn = run_rlkit("teardown", "lab", "-y")
        assert torn.returncode == 0, torn.stderr
    finally:
        if load_record("lab"):
            onprem.stop(load_record("lab"))
        left = testhosts.ssh(head, f"kill {foreign_pid} && while kill -0 {foreign_pid} 2>/dev/null; do sleep 0.05; done")

    assert left.returncode == 0, "the teardown stopped a Ray process of another cluster"
    assert load_record("lab") is None
    assert "lab" not in [c.name for c in registry.list_clusters()]
    assert not token_here.exists()
    assert not onprem.workdir_for("lab").exists()
    assert tunnels_to(head.ip) == []
    for host in testhosts.hosts:
        assert host_processes(testhosts, host) <= IDLE
        assert testhosts.ssh(host, "test -e ~/.rlkit/node-tokens/lab").returncode == 1


def test_changed_host_key_is_refused(testhosts: SshHosts, tmp_path: Path) -> None:
    head = testhosts.hosts[0]
    known = paths.rlkit_home() / "known_hosts"
    paths.private_dir(known.parent)
    known.write_text(f"{head.ip} {other_key(tmp_path)}\n")
    args = ["--head", head.ip, "--ssh-user", testhosts.user, "--ssh-key", str(testhosts.key), "--name", "moved"]
    result = run_rlkit("launch", "onprem", *args)
    assert result.returncode == 2
    line = one_error_line(result)
    assert head.ip in line and str(known) in line
    assert load_record("moved") is None
    assert not paths.tokens_dir().joinpath("moved.token").exists()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("head_start_ray_commands: [\n", "not valid YAML"),
        ("- ray start --head\n", "not a mapping"),
        ("provider: {type: local}\nhead_start_ray_commands: []\n", "has no worker_start_ray_commands"),
        ("head_start_ray_commands: '{{ray_env}} ray start --head'\nworker_start_ray_commands: []\n", "must be a list"),
        ("head_start_ray_commands: [ray stop]\nworker_start_ray_commands: []\n", "`ray stop`"),
        ("head_start_ray_commands: [ray start --head]\nworker_start_ray_commands: []\n", "{{ray_env}}"),
        ("head_start_ray_commands: ['{{ray_env}} ray start --head --dashboard-host=0.0.0.0']\n"
         "worker_start_ray_commands: []\n", "in clear"),
    ],
)
def test_malformed_template_is_one_line(tmp_path: Path, text: str, says: str) -> None:
    template, key = tmp_path / "onprem.yaml", tmp_path / "key"
    template.write_text(text)
    key.write_text("not used: nothing is started\n")
    result = run_rlkit("launch", "onprem", "--head", "127.0.0.1", "--ssh-user", "u", "--ssh-key", str(key),
                       "--config", str(template), "--dry-run")
    assert result.returncode == 2, result.stdout
    line = one_error_line(result)
    assert says in line and str(template) in line


def test_missing_ssh_key_is_bad_input(tmp_path: Path) -> None:
    spec = onprem.OnPremSpec(name="k", head="127.0.0.1", ssh_user="root", ssh_key=tmp_path / "nope")
    with pytest.raises(onprem.SshKeyError) as err:
        onprem.launch_onprem(spec)
    assert err.value.exit_code == 2
    assert str(err.value).count("\n") == 0
    assert str(tmp_path / "nope") in str(err.value)
    assert not onprem.workdir_for("k").exists()


def test_unreachable_host_fails_fast(testhosts: SshHosts) -> None:  # noqa: F811
    head = testhosts.hosts[0]
    spec = onprem.OnPremSpec(
        name="gone", head=head.ip, workers=(testhosts.unused_ip(),), ssh_user=testhosts.user, ssh_key=testhosts.key
    )
    began = time.monotonic()
    with pytest.raises(SshLoginError) as err:
        onprem.launch_onprem(spec, ssh_timeout_s=3)
    assert time.monotonic() - began < 15
    assert err.value.exit_code == 1
    assert testhosts.unused_ip() in str(err.value) and "\n" not in str(err.value)
    assert load_record("gone") is None
    assert not paths.tokens_dir().joinpath("gone.token").exists()


def test_dry_run_renders_config_and_starts_nothing(testhosts: SshHosts) -> None:  # noqa: F811
    head, worker = testhosts.hosts
    app, launch_app = typer.Typer(), typer.Typer()
    launch_onprem.register(launch_app)
    app.add_typer(launch_app, name="launch")
    args = ["launch", "onprem", "--head", head.ip, "--workers", worker.ip, "--ssh-user", testhosts.user]
    result = CliRunner().invoke(app, [*args, "--ssh-key", str(testhosts.key), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    config = json.loads(result.stdout)
    assert config["provider"] == {"type": "local", "head_ip": head.ip, "worker_ips": [worker.ip]}
    assert config["auth"] == {"ssh_user": testhosts.user, "ssh_private_key": str(testhosts.key)}
    start = " ".join(config["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in start and f"--node-ip-address={head.ip}" in start
    assert "{{" not in yaml.safe_dump(config)
    assert load_record("onprem") is None and not onprem.workdir_for("onprem").exists()
    assert "raylet" not in host_processes(testhosts, head)


def test_testhosts_stop_removes_everything() -> None:
    state_dir = Path("/var/lib/rlkit-testhosts") / f"pytest-lifecycle-{time.monotonic_ns()}"
    started = start_hosts(1, state_dir)
    if started.returncode == 77:
        pytest.skip(started.stderr.strip())
    assert started.returncode == 0, started.stderr
    state = json.loads(started.stdout)
    host = state["hosts"][0]
    try:
        login = ["ssh", "-F", state["ssh_config"], host["name"]]
        # A private /tmp per host, and the Python that runs the tests on PATH.
        mine = f"/tmp/{state_dir.name}"
        probe = subprocess.run(
            [*login, f"touch {mine}; command -v python"], capture_output=True, text=True, check=False
        )
        assert probe.returncode == 0, probe.stderr
        assert not Path(mine).exists()
        assert Path(probe.stdout.strip()).parent == Path(sys.executable).parent
    finally:
        stopped = stop_hosts(state_dir)
    assert stopped.returncode == 0, stopped.stderr
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    assert host["netns"] not in netns.stdout
    link = subprocess.run(["ip", "link", "show", f"{host['name']}v"], capture_output=True, check=False)
    assert link.returncode != 0
    assert not Path(f"/proc/{host['sshd_pid']}").exists()
    assert not state_dir.exists()


def test_failed_launch_is_undone(testhosts: SshHosts, tmp_path: Path) -> None:  # noqa: F811
    head, worker = testhosts.hosts
    template = tmp_path / "bad.yaml"
    template.write_text(onprem.DEFAULT_TEMPLATE.read_text().replace("ray start --address", "ray start --bogus --address"))
    spec = onprem.OnPremSpec(
        name="bad", head=head.ip, workers=(worker.ip,), ssh_user=testhosts.user, ssh_key=testhosts.key,
        template=template,
    )
    with pytest.raises(WorkFailedError) as err:
        onprem.launch_onprem(spec)
    assert err.value.exit_code == 1
    assert "No such option '--bogus'" in str(err.value) and worker.ip in str(err.value) and "\n" not in str(err.value)
    assert (onprem.workdir_for("bad") / "launch.log").exists()  # kept for reading
    assert load_record("bad") is None
    assert not paths.tokens_dir().joinpath("bad.token").exists()
    # The head had started: its processes and the tunnel to it are gone again.
    assert "raylet" not in host_processes(testhosts, head)
    assert tunnels_to(head.ip) == []
