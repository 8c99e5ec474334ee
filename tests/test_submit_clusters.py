"""``rlkit submit``, ``status``, ``logs``, ``stop`` and ``teardown`` against
three real local clusters that rlkit launches (one CPU each).

Starting Ray is slow on a small machine: one module-wide trio, tests in file
order, and the last ones stop clusters. The fixture's finalizer stops
whatever is left, even when a test fails.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rlkit.clusters import local, procs
from rlkit.clusters.records import ClusterRecord, load_record
from tests.cli_helpers import RLKIT, launched_local_clusters, one_error_line, run_rlkit
from tests.conftest import CONFIGS

pytestmark = pytest.mark.timeout(300)

SMALL = ["--set", "stop.total_steps=2048", "--set", "rollout.num_workers=1", "--set", "rollout.envs_per_worker=4",
         "--set", "checkpoint.every_updates=1000"]
SLEEPER = "python -c 'import time\nfor i in range(600): print(\"tick\", i, flush=True); time.sleep(0.5)'"


@dataclass
class Trio:
    env: dict[str, str]
    records: dict[str, ClusterRecord]
    work: Path

    def token(self, name: str) -> str:
        return Path(self.records[name].token_path or "").read_text().strip()


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trio]:
    base = tmp_path_factory.mktemp("jobs")
    work = base / "project"
    shutil.copytree(CONFIGS, work / "configs")
    with launched_local_clusters(base, "--name", "s", "--num-clusters", "3", "--cpus", "1",
                                 timeout=240) as (env, records):
        yield Trio(env, {r.name: r for r in records}, work)


@pytest.fixture(autouse=True)
def in_trio(trio: Trio, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in trio.env.items():
        monkeypatch.setenv(key, value)


def submit(trio: Trio, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    # A RAY_ADDRESS left in the shell must not redirect anything.
    return run_rlkit("submit", "-w", str(trio.work), *args, timeout=timeout,
                     extra_env={"RAY_ADDRESS": "127.0.0.1:1", "RAY_API_SERVER_ADDRESS": "http://127.0.0.1:1"})


def jobs_by_id(*args: str) -> dict[str, dict[str, object]]:
    result = run_rlkit("status", "--json", *args)
    return {j["id"]: j for j in json.loads(result.stdout)["jobs"]}


def wait_for(job_id: str, statuses: tuple[str, ...], timeout: float = 120.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = jobs_by_id("--all-jobs").get(job_id)
        if job and job["status"] in statuses:
            return job
        time.sleep(1.0)
    raise AssertionError(f"{job_id} never reached {statuses}: {jobs_by_id('--all-jobs').get(job_id)}")


def test_the_next_steps_after_launch_are_commands_that_work(trio: Trio) -> None:
    again = run_rlkit("launch", "local", "--name", "s", "--num-clusters", "3", "--cpus", "1")
    assert again.returncode == 0 and "already up" in again.stdout, again.stderr
    hints = [line.split("#")[0].strip() for line in again.stdout.splitlines()]
    words = next(shlex.split(h) for h in hints if h.startswith("rlkit submit"))
    # As printed, plus a dry run (what it would send) from the test's working dir.
    result = run_rlkit(words[1], "--dry-run", "--json", "-w", str(trio.work), *words[2:])
    assert result.returncode == 0, result.stderr
    jobs = json.loads(result.stdout)["jobs"]
    assert [(j["cluster"], j["entrypoint"]) for j in jobs] == [("s-1", "python train.py")]


def test_two_train_jobs_run_one_on_each_cluster(trio: Trio) -> None:
    train = "rlkit train configs/ppo_cartpole.yaml " + " ".join(SMALL)
    result = submit(trio, "--cluster", "s-1", "--cluster", "s-2", "--follow",
                    f"{train} --name mlp", f"{train} --name relu --set model.activation=relu", timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    # The assignment comes before the submissions, the logs of both after them.
    assert out.index("Assignment") < out.index("Submitted") < out.index("s-1 mlp  │")
    assert "s-2 relu │" in out and "✓ s-1 mlp SUCCEEDED" in out and "✓ s-2 relu SUCCEEDED" in out
    # Autoreset rows are no env steps, so the stop lands within one iteration (4 envs x 32) past 2,048.
    stops = [int(n.replace(",", "")) for n in re.findall(r"stopped by total_steps: ([\d,]+) steps", out)]
    assert len(stops) == 2 and all(2048 <= n < 2048 + 4 * 32 for n in stops), out
    jobs = {j["name"]: j for j in jobs_by_id().values()}
    assert (jobs["mlp"]["cluster"], jobs["relu"]["cluster"]) == ("s-1", "s-2")
    assert jobs["mlp"]["status"] == jobs["relu"]["status"] == "SUCCEEDED"
    for job in jobs.values():
        runs_dir = Path(str(job["runs_dir"]))
        assert runs_dir == trio.work / "runs" / str(job["id"])
        [run] = runs_dir.iterdir()
        metrics = (run / "metrics.jsonl").read_text().splitlines()
        assert metrics and json.loads(metrics[-1])["step"] >= 2048
    table = run_rlkit("status")
    assert table.returncode == 0
    assert sum("SUCCEEDED" in line for line in table.stdout.splitlines()) == 2
    for name in trio.records:
        assert trio.token(name) not in out + result.stderr + table.stdout


def test_all_sends_one_job_to_every_cluster_with_rlkit_aboard(trio: Trio) -> None:
    code = "import os, rlkit, typer; print('hello', os.environ['RLKIT_RUNS_DIR'], rlkit.__file__, typer.__file__)"
    result = submit(trio, "--all", "--json", "--", "python", "-c", code)
    assert result.returncode == 0, result.stderr
    submitted = json.loads(result.stdout)
    assert [s["cluster"] for s in submitted] == ["s-1", "s-2", "s-3"]
    for s in submitted:
        logs = run_rlkit("logs", s["submission_id"], "--follow")
        assert logs.returncode == 0, logs.stderr
        assert "SUCCEEDED" in logs.stderr
        [line] = [line for line in logs.stdout.splitlines() if line.startswith("hello ")]
        _, runs_dir, rlkit_file, typer_file = line.split()
        assert runs_dir == s["runs_dir"]
        # The job imports the rlkit and typer that travelled with it, not this machine's.
        for module in (rlkit_file, typer_file):
            assert "/runtime_resources/py_modules_files/" in module, module


def test_a_job_finds_its_working_dir_without_the_secrets(trio: Trio, tmp_path: Path) -> None:
    work = tmp_path / "project"
    for name in ("train.py", "tokenizer.py", ".env", "keys/server.pem", ".ssh/id_ed25519", "sub/.aws/credentials"):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text("x\n")
    lister = "import os\nfor d, _, fs in os.walk('.'):\n    for f in fs: print('file', os.path.join(d, f)[2:])"
    result = run_rlkit("submit", "-w", str(work), "--cluster", "s-1", "--include", "keys/*", "--follow",
                       "--", "python", "-c", lister, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    shipped = sorted(line.split(" file ")[1] for line in result.stdout.splitlines() if " file " in line)
    assert shipped == ["keys/server.pem", "tokenizer.py", "train.py"]
    assert "left out of the working dir as secrets: .env, .ssh/, sub/.aws/" in result.stderr


def test_more_jobs_than_clusters_go_round_robin(trio: Trio) -> None:
    jobs = [f"python -c 'print({i} * 111)'" for i in range(1, 4)]
    result = submit(trio, "--cluster", "s-1", "--cluster", "s-2", "--follow", *jobs)
    assert result.returncode == 0, result.stdout + result.stderr
    assignment = result.stdout[result.stdout.index("Assignment"):result.stdout.index("Submitted")]
    assert [line.split()[0] for line in assignment.splitlines() if line.startswith("s-")] == ["s-1", "s-2", "s-1"]
    # Two jobs called `python` on s-1: told apart by their ids.
    lines = result.stdout.splitlines()
    assert any(line.startswith("s-1 python-s-1-") and line.endswith("│ 111") for line in lines)
    assert any(line.startswith("s-2 python ") and line.endswith("│ 222") for line in lines)
    assert any(line.startswith("s-1 python-s-1-") and line.endswith("│ 333") for line in lines)


def test_a_failing_job_fails_follow(trio: Trio) -> None:
    result = submit(trio, "--cluster", "s-2", "--follow", "--", "python", "-c", "raise SystemExit(3)")
    assert result.returncode == 1
    assert "✗ s-2 python FAILED" in result.stderr


def test_logs_and_stop_of_a_running_job(trio: Trio) -> None:
    result = submit(trio, "--cluster", "s-2", "--json", SLEEPER)
    assert result.returncode == 0, result.stderr
    job_id = json.loads(result.stdout)[0]["submission_id"]
    wait_for(job_id, ("RUNNING",))
    deadline = time.monotonic() + 60
    while "tick 3" not in (logs := run_rlkit("logs", job_id)).stdout and time.monotonic() < deadline:
        time.sleep(1.0)
    assert logs.returncode == 0 and "tick 0" in logs.stdout
    last = run_rlkit("logs", job_id, "--tail", "1")
    assert len(last.stdout.splitlines()) == 1 and last.stdout.startswith("tick ")
    refused = run_rlkit("stop", job_id)
    assert refused.returncode == 2 and "pass -y" in one_error_line(refused)
    stopped = run_rlkit("stop", job_id, "-y")
    assert stopped.returncode == 0, stopped.stderr
    assert f"✓ s-2 {job_id} stopped" in stopped.stdout
    assert jobs_by_id()[job_id]["status"] == "STOPPED"
    again = run_rlkit("stop", job_id, "-y")
    assert again.returncode == 0 and "was not running (STOPPED)" in again.stdout


def _ray(trio: Trio, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Ray's own CLI, pointed at one cluster the way its users do it."""
    record = trio.records[name]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=record.token_path or "")
    command, *rest = args
    return subprocess.run([str(Path(RLKIT).parent / "ray"), "job", command, "--address", record.dashboard_url, *rest],
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def test_rays_cli_and_rlkit_see_each_others_jobs(trio: Trio) -> None:
    ours = [i for i, j in jobs_by_id().items() if j["cluster"] == "s-1"]
    listed = _ray(trio, "s-1", "list")
    assert listed.returncode == 0, listed.stderr
    assert ours and all(i in listed.stdout for i in ours)
    theirs = _ray(trio, "s-3", "submit", "--submission-id", "theirs-1", "--no-wait", "--", "echo", "hi")
    assert theirs.returncode == 0, theirs.stderr
    assert "theirs-1" not in jobs_by_id()
    job = wait_for("theirs-1", ("SUCCEEDED",))
    assert (job["cluster"], job["rlkit"], job["entrypoint"]) == ("s-3", False, "echo hi")
    table = run_rlkit("status", "--all-jobs")
    assert any("theirs-1" in line and "SUCCEEDED" in line for line in table.stdout.splitlines())


def test_one_of_three_clusters_down(trio: Trio) -> None:
    # A head that died: its processes end, its record and token stay.
    assert procs.terminate([local.running_processes(trio.records["s-3"])], 5.0) == []
    started = time.monotonic()
    result = submit(trio, "--all", "--timeout", "30", "--", "python", "-c", "print('ok')")
    elapsed = time.monotonic() - started
    assert result.returncode == 3, result.stdout + result.stderr
    port = trio.records["s-3"].ports["dashboard"]
    assert f"✗ s-3 nothing listens at 127.0.0.1:{port} (connection refused)" in result.stderr
    submitted = [line.split()[0] for line in result.stdout[result.stdout.index("Submitted"):].splitlines()
                 if line.startswith("s-")]
    assert submitted == ["s-1", "s-2"]
    assert elapsed < 30
    assert run_rlkit("status").returncode == 3


def test_teardown_refuses_while_rlkit_jobs_run_and_force_stops_them(trio: Trio) -> None:
    # Long enough to be running at the teardown, and no checkpoint of its own until then.
    result = submit(trio, "--cluster", "s-2", "--json", "--", "rlkit", "train", "configs/ppo_cartpole.yaml", *SMALL,
                    "--set", "stop.total_steps=100000000")
    job = json.loads(result.stdout)[0]
    runs_dir = Path(job["runs_dir"])
    deadline = time.monotonic() + 150
    while not list(runs_dir.glob("*/metrics.jsonl")) and time.monotonic() < deadline:
        time.sleep(1.0)
    [run] = runs_dir.iterdir()
    assert not list(run.glob("checkpoints/*.pt"))
    refused = run_rlkit("teardown", "s-2", "-y")
    assert refused.returncode == 2
    assert f"rlkit jobs are running: s-2 runs {job['submission_id']}" in one_error_line(refused)
    assert load_record("s-2") is not None
    forced = run_rlkit("teardown", "s-2", "-y", "--force")
    assert forced.returncode == 0, forced.stderr
    assert f"s-2 job {job['submission_id']} stopped; stopped (" in forced.stdout
    assert procs.find_processes(trio.records["s-2"].process_marker or "") == []
    # Stopped as by Ctrl-C: rlkit train saved a checkpoint to resume from.
    assert list(run.glob("checkpoints/*.pt"))
