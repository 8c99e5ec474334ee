"""The on-prem provider against real sshd test hosts: ray up, token auth, ray down."""

from __future__ import annotations

import json
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
from tests.cli_helpers import run_rlkit
from tests.testhosts_fixture import SshHosts, start_hosts, stop_hosts

pytestmark = pytest.mark.timeout(300)

# What an idle test host runs: its sshd, the session asking, and ps itself.
IDLE = {"sshd", "bash", "ps"}


def host_processes(hosts: SshHosts, host) -> set[str]:
    result = hosts.ssh(host, "ps -eo comm=")
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_launch_two_nodes_with_token_then_teardown(testhosts: SshHosts) -> None:
    head, worker = testhosts.hosts
    spec = onprem.OnPremSpec(
        name="lab", head=head.ip, workers=(worker.ip,), ssh_user=testhosts.user, ssh_key=testhosts.key
    )
    try:
        launched = onprem.launch_onprem(spec, join_timeout_s=120)
        record = launched.record
        assert launched.nodes_alive == 2
        assert sorted(n["node_ip"] for n in onprem.alive_nodes(record)) == sorted([head.ip, worker.ip])
        assert record.gcs_address == f"{head.ip}:6379"
        assert registry.get_cluster("lab").dashboard_url == f"http://{head.ip}:8265"

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

        torn = run_rlkit("teardown", "lab", "-y")
        assert torn.returncode == 0, torn.stderr
    finally:
        if load_record("lab"):
            onprem.stop(load_record("lab"))

    assert load_record("lab") is None
    assert "lab" not in [c.name for c in registry.list_clusters()]
    assert not token_here.exists()
    assert not onprem.workdir_for("lab").exists()
    for host in testhosts.hosts:
        assert host_processes(testhosts, host) <= IDLE
        assert testhosts.ssh(host, "test -e ~/.rlkit/node-tokens/lab").returncode == 1


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


def test_failed_ray_up_is_undone(testhosts: SshHosts, tmp_path: Path) -> None:  # noqa: F811
    head = testhosts.hosts[0]
    template = tmp_path / "bad.yaml"
    template.write_text(onprem.DEFAULT_TEMPLATE.read_text().replace("ray start --head", "ray start --head --bogus"))
    spec = onprem.OnPremSpec(
        name="bad", head=head.ip, ssh_user=testhosts.user, ssh_key=testhosts.key, template=template
    )
    with pytest.raises(WorkFailedError) as err:
        onprem.launch_onprem(spec)
    assert err.value.exit_code == 1
    assert "No such option '--bogus'" in str(err.value) and "\n" not in str(err.value)
    assert (onprem.workdir_for("bad") / "launch.log").exists()  # kept for reading
    assert load_record("bad") is None
    assert not paths.tokens_dir().joinpath("bad.token").exists()
    assert "raylet" not in host_processes(testhosts, head)
