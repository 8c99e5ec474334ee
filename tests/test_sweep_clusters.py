"""Sweeps on a real local cluster that rlkit launches: the sweep driver as a
job there, shown by ``rlkit status``; and, once a second node joins that
cannot see the storage path, the refusal to start.

One module-wide cluster (two CPUs); the second node lives in a mount
namespace of its own, where a tmpfs hides the storage path. The fixture's
finalizer stops every process of the cluster, the second node's included.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from rlkit.clusters import local, procs
from rlkit.clusters.records import ClusterRecord
from tests.cli_helpers import RLKIT, launched_local_clusters, one_error_line, run_rlkit
from tests.conftest import CONFIGS

pytestmark = pytest.mark.timeout(300)

SWEEP = {
    "name": "remote",
    "base": "../ppo_cartpole.yaml",
    "base_set": {"stop.total_steps": 1024, "stop.target_return": None},
    "num_samples": 2,
    "space": {"algo.lr": {"loguniform": [3.0e-4, 3.0e-3]}},
    "resources": {"learner_cpus": 0, "rollout_workers": 1, "cpus_per_worker": 1},
}


@dataclass
class Lab:
    env: dict[str, str]
    record: ClusterRecord
    work: Path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("sweeplab")
    work = base / "project"
    shutil.copytree(CONFIGS, work / "configs", ignore=shutil.ignore_patterns("sweeps"))
    (work / "configs" / "sweeps").mkdir()
    (work / "configs" / "sweeps" / "remote.yaml").write_text(yaml.safe_dump(SWEEP))
    # On the machine's addresses, not loopback alone: a test joins a second node to it.
    with launched_local_clusters(base, "--name", "sw", "--cpus", "2", "--host", "0.0.0.0",
                                 timeout=240) as (env, [record]):
        yield Lab(env, record, work)


@pytest.fixture(autouse=True)
def in_lab(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in lab.env.items():
        monkeypatch.setenv(key, value)


def rlkit_in(work: Path, *args: str, extra_env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``rlkit ARGS`` run from the project directory, as a user would."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({"COLUMNS": "200", **(extra_env or {})})
    return subprocess.run([RLKIT, *args], cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, check=False)


def sweeps_in_status() -> list[dict[str, object]]:
    return json.loads(run_rlkit("status", "--json").stdout)["sweeps"]


def test_a_sweep_sent_to_a_cluster_runs_there_and_shows_in_status(lab: Lab) -> None:
    (lab.work / ".env").write_text("AWS_SECRET_ACCESS_KEY=not-for-the-cluster\n")
    sent = rlkit_in(lab.work, "sweep", "configs/sweeps/remote.yaml", "--cluster", "sw", "--json",
                    "--set", "search.seed=3")
    assert sent.returncode == 0, sent.stderr
    [job] = json.loads(sent.stdout)
    assert job["cluster"] == "sw" and job["error"] is None
    # As rlkit submit does: secrets stay home, and the user is told in one line.
    assert "left out of the working dir as secrets: .env (--include PATTERN sends one)" in sent.stderr
    assert job["entrypoint"] == ("python -m rlkit sweep configs/sweeps/remote.yaml --json --quiet "
                                 "--set search.seed=3")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        [listed] = sweeps_in_status()
        if listed["state"] not in ("running", "unknown"):
            break
        time.sleep(2)
    assert listed["state"] == "finished", (listed, run_rlkit("logs", job["submission_id"]).stdout[-3000:])
    assert listed["cluster"] == "sw" and listed["job_id"] == job["submission_id"]
    assert listed["trials"] == {"TERMINATED": 2} and listed["best_metric"] is not None
    sweep_dir = Path(str(listed["path"]))
    # A local cluster shares this disk: the sweep landed in the project's runs/.
    assert sweep_dir.parent == lab.work / "runs" / job["submission_id"] / "sweeps"
    assert (sweep_dir / "best_config.yaml").is_file()
    text = " ".join(run_rlkit("status").stdout.split())
    assert "Sweeps" in text and "remote sw finished 2 done" in text


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="a second node with its own mounts needs root and unshare")
def test_storage_only_on_the_head_is_refused_with_the_fix(lab: Lab, tmp_path: Path) -> None:
    hidden = tmp_path / "head-only"
    hidden.mkdir()
    record = lab.record
    agent_http, agent_grpc, metrics, runtime_env = _free_ports(4)
    join = (f"mount -t tmpfs none {hidden} && exec {local.ray_executable()} start --address={record.gcs_address} "
            f"--num-cpus=1 --block --dashboard-agent-listen-port={agent_http} "
            f"--dashboard-agent-grpc-port={agent_grpc} --metrics-export-port={metrics} "
            f"--runtime-env-agent-port={runtime_env}")
    env = {**os.environ, procs.MARKER_ENV: record.process_marker or "", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": record.token_path or ""}
    # A node that sees another filesystem at the storage path, as a second machine would.
    node = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", join], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            [cluster] = json.loads(run_rlkit("status", "sw", "--json").stdout)["clusters"]
            if cluster["nodes_alive"] == 2:
                break
            assert node.poll() is None, node.stderr.read() if node.stderr else ""
            time.sleep(2)
        assert cluster["nodes_alive"] == 2
        exports = json.loads(run_rlkit("env", "sw", "--json").stdout)
        cluster_env = {k: v for k, v in exports.items() if v is not None}
        result = rlkit_in(lab.work, "sweep", "configs/sweeps/remote.yaml", "--set", f"storage_path={hidden}",
                          extra_env=cluster_env)
        assert result.returncode == 2, result.stderr
        line = one_error_line(result)
        assert f"storage path {hidden} exists only on the driver's node" in line
        assert "every node mounts at the same path" in line
    finally:
        os.killpg(node.pid, signal.SIGTERM)
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
