"""Real local Ray clusters: launch two, look at them, talk to them, stop one.

One module-wide pair of clusters (starting Ray takes a while on a small
machine); tests run in file order and the last ones tear the pair down. The
fixture's finalizer stops whatever is left, even when a test fails.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray

from rlkit.clusters import dashboard, launching, local, procs
from rlkit.clusters.records import ClusterRecord, list_records, load_record
from rlkit.errors import WorkFailedError
from tests.cli_helpers import RLKIT, launched_local_clusters, one_error_line, run_rlkit
from tests.testhosts_fixture import SshHosts

pytestmark = pytest.mark.timeout(300)

# Set in the shell that launches the lab's clusters, and nowhere else.
SHELL_ONLY = "RLKIT_TEST_SET_IN_THE_LAUNCHING_SHELL"


@dataclass
class Lab:
    env: dict[str, str]
    records: dict[str, ClusterRecord]

    def token(self, name: str) -> str:
        return Path(self.records[name].token_path or "").read_text()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("lab")
    with launched_local_clusters(base, "--name", "t", "--num-clusters", "2", "--cpus", "1",
                                 shell_env={SHELL_ONLY: "leaked"}) as (env, records):
        yield Lab(env, {r.name: r for r in records})


@pytest.fixture(autouse=True)
def in_lab(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test sees the lab's registry (conftest points each test elsewhere)."""
    for key, value in lab.env.items():
        monkeypatch.setenv(key, value)


def status_json(*args: str, **kwargs: object) -> dict[str, dict[str, object]]:
    result = run_rlkit("status", "--json", *args, **kwargs)  # type: ignore[arg-type]
    return {c["name"]: c for c in json.loads(result.stdout)["clusters"]}


def test_launch_registers_two_independent_clusters(lab: Lab) -> None:
    t1, t2 = lab.records["t-1"], lab.records["t-2"]
    assert not set(t1.ports.values()) & set(t2.ports.values())
    assert t1.temp_dir != t2.temp_dir and len(t1.temp_dir or "") < 40
    assert lab.token("t-1") != lab.token("t-2")
    assert oct(os.stat(t1.token_path or "").st_mode & 0o777) == "0o600"
    text = Path(lab.env["RLKIT_RAY_ADDRESS_FILE"]).read_text()
    assert text == f"# Cluster: t-1\n{t1.dashboard_url}\n# Cluster: t-2\n{t2.dashboard_url}\n"
    assert lab.token("t-1") not in text
    assert all(procs.is_running(ref) for ref in t1.pids)


def test_status_shows_both_up_with_resources() -> None:
    clusters = status_json()
    for name in ("t-1", "t-2"):
        assert clusters[name]["state"] == "UP", clusters[name]
        assert clusters[name]["provider"] == "local"
        assert clusters[name]["nodes_alive"] == 1
        assert clusters[name]["cpus_total"] == 1.0 and clusters[name]["gpus_total"] == 0.0
        assert clusters[name]["ray_version"] == ray.__version__
        assert clusters[name]["token_auth"] is True
    table = run_rlkit("status")
    assert table.returncode == 0
    rows = [line for line in table.stdout.splitlines() if "t-1" in line or "t-2" in line]
    assert len(rows) == 2 and all("UP" in row and "token" in row for row in rows)


def _get(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_requests_need_this_clusters_own_token(lab: Lab) -> None:
    url = lab.records["t-1"].dashboard_url + "/api/version"
    assert _get(url, None) == 401
    assert _get(url, lab.token("t-2")) == 403
    assert _get(url, lab.token("t-1")) == 200
    with pytest.raises(dashboard.DashboardError, match="rejected the token"):
        dashboard.get_json(lab.records["t-1"].dashboard_url, "/api/version", lab.token("t-2"), 10)


def test_launching_a_name_that_is_up_is_a_noop(lab: Lab) -> None:
    result = run_rlkit("launch", "local", "--name", "t", "--num-clusters", "2", "--cpus", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("already up: nothing started") == 2
    assert {r.name: r.ports for r in list_records()} == {n: r.ports for n, r in lab.records.items()}


def _bash(script: str) -> subprocess.CompletedProcess[str]:
    """``script`` in a shell with rlkit and ray on PATH and no Ray settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PATH"] = f"{Path(RLKIT).parent}:{env['PATH']}"
    return subprocess.run(["bash", "-c", script], check=False, env=env, capture_output=True, text=True, timeout=180)


_GCS_PORT = "import ray; ray.init(); print('GCS', ray.get_runtime_context().gcs_address)"


def test_rays_own_cli_and_scripts_reach_a_cluster_through_rlkit_env(lab: Lab) -> None:
    t2 = lab.records["t-2"]
    job = _bash(f'eval "$(rlkit env t-2)" && ray job submit -- python -c "{_GCS_PORT}"')
    assert job.returncode == 0, job.stdout + job.stderr
    assert f"GCS {t2.gcs_address}" in job.stdout
    script = _bash(f'eval "$(rlkit env t-2)" && python -c "{_GCS_PORT}"')
    assert script.returncode == 0, script.stdout + script.stderr
    assert f"GCS {t2.gcs_address}" in script.stdout
    assert lab.token("t-2") not in job.stdout + job.stderr + script.stdout + script.stderr


def test_rays_awk_recipe_reaches_the_first_cluster(lab: Lab) -> None:
    # Ray prefers RAY_ADDRESS / RAY_API_SERVER_ADDRESS over --address: take
    # only the token settings from rlkit env, and the address from the file.
    recipe = _bash(
        'eval "$(rlkit env t-1)" && unset RAY_ADDRESS RAY_API_SERVER_ADDRESS && '
        f"ray job submit --address=$(awk '!/^#/' {lab.env['RLKIT_RAY_ADDRESS_FILE']} | head -n 1) "
        f'-- python -c "{_GCS_PORT}"'
    )
    assert recipe.returncode == 0, recipe.stdout + recipe.stderr
    assert f"GCS {lab.records['t-1'].gcs_address}" in recipe.stdout


def _listening_sockets(pids: list[int]) -> dict[tuple[str, int], int]:
    """{(address, port): pid} of the TCP sockets that ``pids`` listen on."""
    inodes: dict[str, int] = {}
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in (fd_dir.iterdir() if fd_dir.exists() else []):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes[target[8:-1]] = pid
    found = {}
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            host, port = fields[1].split(":")
            raw = bytes.fromhex(host)
            # The kernel writes each 32-bit word of the address in host order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found[(socket.inet_ntop(family, raw), int(port, 16))] = inodes[fields[9]]
    return found


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


# Run inside a test host's network namespace: what each port of this
# machine says to a request without a token.
_PROBE = """
import socket, sys
for port in sys.argv[2:]:
    try:
        with socket.create_connection((sys.argv[1], int(port)), timeout=5) as s:
            s.sendall(b"GET /metrics HTTP/1.0\\r\\n\\r\\n")
            print(port, s.recv(64).split(b"\\r\\n")[0].decode(errors="replace") or "closed")
    except ConnectionRefusedError:
        print(port, "refused")
    except OSError as err:
        print(port, type(err).__name__)
"""


def test_other_hosts_reach_no_port_of_a_local_cluster(lab: Lab, testhosts: SshHosts) -> None:
    # The job tests above left workers running: their ports count too.
    by_pid = {r.pid: name for name, rec in lab.records.items() for r in local.running_processes(rec)}
    sockets = _listening_sockets(list(by_pid))
    ports = {port for _, port in sockets}
    for name, record in lab.records.items():
        assert set(record.ports.values()) <= ports, f"{name}: some of its ports are not listened on"
    wide = {f"{address}:{port} ({procs.command_name(procs.ProcessRef(pid, 0))})"
            for (address, port), pid in sockets.items() if not _is_loopback(address)}
    assert not wide, f"listening beyond loopback: {sorted(wide)}"
    probe = subprocess.run(
        ["ip", "netns", "exec", testhosts.hosts[0].netns, sys.executable, "-c", _PROBE, testhosts.machine_ip(),
         *map(str, sorted(ports))], capture_output=True, text=True, timeout=120, check=True,
    )
    answers = dict(line.split(" ", 1) for line in probe.stdout.splitlines())
    assert len(answers) == len(ports)
    # Refused, or at least no answer without the token (HTTP 401/403).
    allowed = {port: a for port, a in answers.items() if a == "refused" or a.split()[1:2] in (["401"], ["403"])}
    assert answers == allowed, f"answered another host without a token: {answers}"


def test_jobs_do_not_see_the_launching_shells_environment(lab: Lab) -> None:
    show = "import os; print('ENV', ' '.join(sorted(os.environ)))"
    job = _bash(f'eval "$(rlkit env t-2)" && ray job submit -- python -c "{show}"')
    assert job.returncode == 0, job.stdout + job.stderr
    names = next(line for line in job.stdout.splitlines() if line.startswith("ENV ")).split()[1:]
    assert "PATH" in names and "HOME" in names
    assert SHELL_ONLY not in names and "RLKIT_HOME" not in names and "RLKIT_RAY_ADDRESS_FILE" not in names


def _write_entries(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "hand_written"
    path.write_text(text)
    return {"RLKIT_RAY_ADDRESS_FILE": str(path)}


def test_wrong_port_is_named(lab: Lab, tmp_path: Path) -> None:
    gcs_port = lab.records["t-1"].ports["gcs"]
    env = _write_entries(tmp_path, f"# Cluster: wrong\nhttp://127.0.0.1:{gcs_port}\n")
    result = run_rlkit("status", "wrong", extra_env=env)
    assert result.returncode == 2
    assert "WRONG-PORT" in result.stdout
    assert f"127.0.0.1:{gcs_port} does not speak HTTP: not a Ray dashboard" in result.stdout


def test_missing_or_wrong_token_fails_in_one_line(lab: Lab, tmp_path: Path) -> None:
    url = lab.records["t-1"].dashboard_url
    env = _write_entries(tmp_path, f"# Cluster: mine\n{url}\n")
    # The shell's token is not for a line the user did not tie it to.
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="not-the-token")
    missing = run_rlkit("status", "mine", extra_env=env)
    assert missing.returncode == 1 and "AUTH-FAILED" in missing.stdout
    assert "requires a token and none was sent (no token is tied to it: write '# Token: env'" in missing.stdout
    env.update(_write_entries(tmp_path, f"# Cluster: mine\n# Token: env\n{url}\n"))
    wrong = run_rlkit("status", "mine", extra_env=env)
    assert wrong.returncode == 1 and "rejected the token (token: $RAY_AUTH_TOKEN)" in wrong.stdout
    assert "not-the-token" not in wrong.stdout + wrong.stderr


def test_a_deleted_token_file_is_bad_input(lab: Lab, tmp_path: Path) -> None:
    record = lab.records["t-2"]
    moved = tmp_path / "token"
    Path(record.token_path or "").rename(moved)
    try:
        result = run_rlkit("status", "t-2")
        assert result.returncode == 2
        assert f"token file {record.token_path} is missing" in result.stdout
        assert one_error_line(run_rlkit("env", "t-2")).endswith("relaunch the cluster)")
    finally:
        moved.rename(record.token_path or "")


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers: a hung head."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield server.getsockname()[1]
    server.close()


def test_one_hung_cluster_does_not_stall_the_table(lab: Lab, tmp_path: Path, silent_server: int) -> None:
    lines = "".join(f"# Cluster: {n}\n{r.dashboard_url}\n" for n, r in lab.records.items())
    env = _write_entries(tmp_path, lines + f"# Cluster: hung\nhttp://127.0.0.1:{silent_server}\n")
    started = time.monotonic()
    result = run_rlkit("status", "--json", "--timeout", "2", extra_env=env)
    elapsed = time.monotonic() - started
    clusters = {c["name"]: c for c in json.loads(result.stdout)["clusters"]}
    assert result.returncode == 3
    assert [clusters[n]["state"] for n in ("t-1", "t-2", "hung")] == ["UP", "UP", "UNREACHABLE"]
    assert "did not answer within" in clusters["hung"]["detail"]
    # 2 s of timeout, plus the CLI's own start-up on a busy 2-core machine.
    assert elapsed < 6.0


def test_unreachable_cluster_fails_fast(tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    env = _write_entries(tmp_path, f"# Cluster: gone\nhttp://127.0.0.1:{port}\n")
    result = run_rlkit("status", "gone", extra_env=env, timeout=20)
    assert result.returncode == 1
    assert f"gone: nothing listens at 127.0.0.1:{port} (connection refused)" in result.stdout


def test_a_truncated_record_blocks_nothing_and_teardown_still_stops_that_cluster_alone(lab: Lab) -> None:
    t1, t2 = lab.records["t-1"], lab.records["t-2"]
    t2_before = procs.find_processes(t2.process_marker or '')
    record_file = Path(lab.env["RLKIT_HOME"]) / "clusters" / "t-1.json"
    record_file.write_text(record_file.read_text()[:120])
    listed = run_rlkit("status")
    assert listed.returncode == 3, listed.stdout + listed.stderr
    notes = [line for line in listed.stdout.splitlines() if line.startswith("t-1: ")]
    assert "BROKEN" in listed.stdout and len(notes) == 1 and "is unreadable" in notes[0], listed.stdout
    assert status_json("t-2")["t-2"]["state"] == "UP"
    assert run_rlkit("env", "t-2").returncode == 0
    # Someone reading the cluster's log: not a process of the cluster.
    reader = subprocess.Popen(["tail", "-f", f"{t1.temp_dir}/session_latest/logs/raylet.out"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        result = run_rlkit("teardown", "t-1", "-y")
        assert reader.poll() is None
    finally:
        reader.kill()
        reader.wait()
    assert result.returncode == 0, result.stderr
    assert "t-1 stopped" in result.stdout
    assert procs.find_processes(t1.process_marker or '') == []
    assert not any(procs.is_running(ref) for ref in t1.pids)
    assert not Path(t1.temp_dir or "").exists() and not Path(t1.token_path or "").exists()
    assert load_record("t-1") is None
    assert Path(lab.env["RLKIT_RAY_ADDRESS_FILE"]).read_text() == f"# Cluster: t-2\n{t2.dashboard_url}\n"
    assert all(procs.is_running(ref) for ref in t2_before)
    assert status_json()["t-2"]["state"] == "UP"


def test_status_is_not_up_once_the_gcs_died(lab: Lab) -> None:
    t2 = lab.records["t-2"]
    gcs = [r for r in local.running_processes(t2) if procs.command_name(r) == "gcs_server"]
    assert len(gcs) == 1
    os.kill(gcs[0].pid, signal.SIGKILL)
    result = run_rlkit("status", "--json", "--timeout", "3")
    cluster = {c["name"]: c for c in json.loads(result.stdout)["clusters"]}["t-2"]
    assert result.returncode == 1
    assert cluster["state"] == "UNREACHABLE" and "GCS does not" in cluster["detail"], cluster


def test_teardown_of_a_stopped_cluster_succeeds_with_a_note(lab: Lab) -> None:
    t2 = lab.records["t-2"]
    kept = run_rlkit("teardown", "t-2", "-y", "--keep-entry")
    assert kept.returncode == 0 and "entry kept" in kept.stdout
    assert status_json()["t-2"]["state"] == "STOPPED"
    again = run_rlkit("teardown", "--all", "-y")
    assert again.returncode == 0
    assert "t-2 was already stopped; entry removed" in again.stdout
    assert procs.find_processes(t2.process_marker or '') == []
    assert Path(lab.env["RLKIT_RAY_ADDRESS_FILE"]).read_text() == ""
    assert list_records() == []


def test_a_launch_that_fails_half_way_leaves_nothing_behind(lab: Lab) -> None:
    # Too short a timeout for Ray to come up: `ray start` is killed while its
    # GCS and raylet are already running.
    spec = local.LocalSpec("halfway", cpus=1)
    with pytest.raises(WorkFailedError, match="halfway: `ray start` did not finish in time"):
        launching.launch(local.provider, spec, timeout_s=3.0)
    assert load_record("halfway") is None
    assert not (Path(lab.env["RLKIT_HOME"]) / "tokens" / "halfway.token").exists()
    assert "halfway" not in Path(lab.env["RLKIT_RAY_ADDRESS_FILE"]).read_text()
    assert list(Path("/tmp").glob("rlkit-halfway-*")) == []
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if b"/tmp/rlkit-halfway-" in _read(p)]


def test_a_launch_that_fails_at_registration_stops_what_it_started(lab: Lab) -> None:
    address_file = Path(lab.env["RLKIT_RAY_ADDRESS_FILE"])
    before = address_file.read_text()
    launch = subprocess.Popen([RLKIT, "launch", "local", "--name", "late", "--cpus", "1"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The record appears before `ray start`, which takes seconds: meanwhile
        # someone writes an entry of that name by hand, and registering fails.
        record_file = Path(lab.env["RLKIT_HOME"]) / "clusters" / "late.json"
        deadline = time.monotonic() + 60
        while not record_file.exists() and launch.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert record_file.exists() and launch.poll() is None
        address_file.write_text(before + "# Cluster: late\nhttp://127.0.0.1:1\n")
        _, stderr = launch.communicate(timeout=180)
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.wait()
        address_file.write_text(before)
    assert launch.returncode == 2 and "cluster 'late' is already registered" in stderr, stderr
    assert load_record("late") is None
    assert not (Path(lab.env["RLKIT_HOME"]) / "tokens" / "late.token").exists()
    assert list(Path("/tmp").glob("rlkit-late-*")) == []
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if b"/tmp/rlkit-late-" in _read(p)]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
