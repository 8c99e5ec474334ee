"""``rlkit submit``, ``logs`` and ``stop`` without a running cluster: bad
input (one line, exit code 2), pairing and what a job carries (dry runs
contact no cluster), job spec files, and the Python API's checks."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from zipfile import ZipFile

import pytest

from rlkit import paths
from rlkit.errors import BadInputError, ConfigError
from rlkit.jobs.package import left_out_summary, packed
from rlkit.jobs.spec import (
    JobSpec,
    load_job_file,
    prepare,
    rewrite_entrypoint,
    specs_from_args,
)
from tests.cli_helpers import one_error_line, run_rlkit
from tests.conftest import CONFIGS

# Addresses nothing listens on: a dry run and a bad input never reach them.
TWO_CLUSTERS = "# Cluster: a\nhttp://127.0.0.1:9\n# Cluster: b\nhttp://127.0.0.1:7\n"
TRAIN = "rlkit train configs/ppo_cartpole.yaml --set stop.total_steps=2048"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A working dir with the repo's configs, and two registered clusters."""
    work = tmp_path / "project"
    shutil.copytree(CONFIGS, work / "configs")
    paths.address_file().write_text(TWO_CLUSTERS)
    return work


def dry_run(project: Path, *args: str) -> dict:
    result = run_rlkit("submit", "--dry-run", "--json", "-w", str(project), *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_jobs_pair_with_clusters_in_file_order_then_round_robin(project: Path) -> None:
    plan = dry_run(project, "python a.py", "python b.py", "python c.py")
    assert [(j["cluster"], j["name"]) for j in plan["jobs"]] == [("a", "a"), ("b", "b"), ("a", "c")]
    one = dry_run(project, "--", "python", "a.py")
    assert [j["cluster"] for j in one["jobs"]] == ["a"] and one["idle"] == ["b"]
    named = dry_run(project, "--cluster", "b", "--", "python", "a.py")
    assert [j["cluster"] for j in named["jobs"]] == ["b"]


def test_all_sends_every_job_to_every_cluster(project: Path) -> None:
    plan = dry_run(project, "--all", "python a.py", "python b.py")
    assert [(j["cluster"], j["name"]) for j in plan["jobs"]] == [("a", "a"), ("b", "a"), ("a", "b"), ("b", "b")]
    assert len({j["submission_id"] for j in plan["jobs"]}) == 4


def test_a_job_carries_rlkit_its_config_and_its_runs_dir(project: Path) -> None:
    plan = dry_run(project, "--cpus", "1", "--env", "SEED=3", "--", *TRAIN.split(), "--set", "algo.lr=1e-3")
    job = plan["jobs"][0]
    assert job["entrypoint"] == "python -m rlkit train configs/ppo_cartpole.yaml --set stop.total_steps=2048 --set algo.lr=1e-3"
    assert re.fullmatch(r"ppo_cartpole-a-[0-9a-f]{4}", job["submission_id"])
    # A cluster that is not on this machine: under the home of Ray's user there.
    assert job["runs_dir"] == "${HOME}/rlkit-runs/" + job["submission_id"]
    assert job["env_vars"]["RLKIT_RUNS_DIR"] == job["runs_dir"] and job["env_vars"]["SEED"] == "3"
    assert job["env_vars"]["RAY_JOB_STOP_SIGNAL"] == "SIGINT"
    assert job["cpus"] == 1.0 and job["gpus"] is None
    config = json.loads(job["metadata"]["rlkit.config"])
    assert config["algo"]["lr"] == 1e-3 and config["stop"]["total_steps"] == 2048
    assert config["runs_dir"] == job["runs_dir"]
    assert job["metadata"]["rlkit"] and job["metadata"]["rlkit.cluster"] == "a"
    assert plan["modules"][:3] == ["rlkit", "typer", "rich"]


def test_the_working_dir_leaves_runs_venvs_and_caches_behind(project: Path, tmp_path: Path) -> None:
    work = tmp_path / "code"
    (work / "runs" / "old").mkdir(parents=True)
    (work / "runs" / "old" / "metrics.jsonl").write_text("x" * 10000)
    (work / "pkg" / "runs").mkdir(parents=True)
    (work / "pkg" / "runs" / "__init__.py").write_text("")
    for cache in (".pytest_cache", "__pycache__", ".git", ".venv"):
        (work / cache).mkdir()
        (work / cache / "x").write_text("x")
    venv = work / "tools" / "myenv"
    (venv / "lib").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (venv / "lib" / "big.py").write_text("x = 1\n" * 10000)
    (work / ".gitignore").write_text("secret.txt\n")
    (work / "secret.txt").write_text("s")
    (work / "train.py").write_text("print('hi')\n")
    with packed(work) as shipment, ZipFile(shipment.working_dir.path) as archive:
        names = sorted(archive.namelist())
    assert names == [".gitignore", "pkg/runs/__init__.py", "train.py"]
    assert dry_run(work, "--", "python", "train.py")["files"] == 3
    text = run_rlkit("submit", "--dry-run", "-w", str(project), "--", "rlkit", "train", "configs/ppo_cartpole.yaml")
    assert "a leading `rlkit` runs as `python -m rlkit`" in text.stdout
    assert "python -m rlkit train configs/ppo_cartpole.yaml" in text.stdout


# Secrets as projects hold them, at the top and deeper down.
SECRET_FILES = (".env", "deploy/.env.production", "id_rsa", "id_rsa.pub", "keys/server.pem", "keys/client.key",
                ".ssh/config", ".ssh/known_hosts", "infra/.aws/credentials", ".netrc", ".git-credentials",
                "hf_token", "lab.token", ".rlkit/tokens/lab.token", ".kube/config")


def secret_project(root: Path) -> Path:
    for name in (*SECRET_FILES, "train.py", "tokenizer.py", "keys/README.md", "src/env.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"contents of {name}\n")
    return root


def test_secrets_stay_home_listed_in_one_line_unless_included(tmp_path: Path) -> None:
    work = secret_project(tmp_path / "code")
    with packed(work) as shipment, ZipFile(shipment.working_dir.path) as archive:
        names = sorted(n for n in archive.namelist() if not n.endswith("/"))
    assert names == ["keys/README.md", "src/env.py", "tokenizer.py", "train.py"]
    # A directory inside a secret one is left out whole, as Ray skips it.
    expected = sorted(name.replace("/lab.token", "/") if name.startswith(".rlkit/") else name for name in SECRET_FILES)
    assert sorted(shipment.left_out) == expected
    paths.address_file().write_text(TWO_CLUSTERS)
    result = run_rlkit("submit", "--dry-run", "--json", "-w", str(work), "--include", "id_rsa.pub",
                       "--include", "keys/*.pem", "--", "python", "train.py")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert sorted(plan["left_out"]) == sorted(set(expected) - {"id_rsa.pub", "keys/server.pem"})
    assert plan["files"] == 6
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("left out of the working dir as secrets: ")
    assert ".env, .git-credentials, .netrc, hf_token, id_rsa, lab.token, .kube/, .rlkit/ and 4 more" in line
    assert "id_rsa.pub" not in line and "(--include PATTERN sends one)" in line
    summary = left_out_summary([".ssh/config", ".ssh/known_hosts", "infra/.aws/credentials", ".rlkit/tokens/", "a.pem"])
    assert summary == ".ssh/ (2 files), infra/.aws/, .rlkit/, a.pem"


def test_rlkits_home_in_the_working_dir_is_refused_even_when_included(tmp_path: Path) -> None:
    work = secret_project(tmp_path / "code")
    home = work / "state" / "rlkit"
    (home / "tokens").mkdir(parents=True)
    (home / "tokens" / "lab.token").write_text("t")
    paths.address_file().write_text(TWO_CLUSTERS)
    for working_dir in (work, home / "tokens"):
        result = run_rlkit("submit", "--dry-run", "-w", str(working_dir), "--include", "state/", "--include", "*",
                           "--", "python", "train.py", extra_env={"RLKIT_HOME": str(home)})
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"and rlkit's home {home} (the clusters' tokens) overlap" in one_error_line(result)


def test_a_working_dir_over_rays_upload_limit_is_refused_before_upload(project: Path) -> None:
    with open(project / "big.bin", "wb") as big:
        big.writelines(os.urandom(2**20) for _ in range(101))
    result = run_rlkit("submit", "-w", str(project), "--", "python", "x.py")
    assert result.returncode == 2
    line = one_error_line(result)
    assert "packs to 101.0 MiB, over Ray's upload limit of 100.0 MiB (largest: big.bin" in line
    assert ".rayignore" in line


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], "missing ENTRYPOINT"),
        (["--cluster", "nope", "--", "python", "x.py"], "no cluster named 'nope'"),
        (["--all", "--cluster", "a", "--", "python", "x.py"], "--all and --cluster do not go together"),
        (["--follow", "--json", "--", "python", "x.py"], "--follow and --json do not go together"),
        (["--env", "NOVALUE", "--", "python", "x.py"], "--env 'NOVALUE': expected KEY=VALUE"),
        (["--runs-dir", "runs", "--", "python", "x.py"], "--runs-dir runs: give an absolute path"),
        (["--cpus", "-1", "--", "python", "x.py"], "job: cpus: Input should be greater than or equal to 0"),
        (["python 'x.py"], "check its quotes"),
        (["python a.py", " "], "an entrypoint is empty"),
        ([""], "the entrypoint is empty"),
        (["--", ""], "the entrypoint is empty"),
        (["a", "--", ""], "starts with 'a', the name of a cluster"),
        (["b", "--", "rlkit", "train", "configs/ppo_cartpole.yaml"], "name clusters with --cluster: rlkit submit --cluster b"),
        (["--include", "", "--", "python", "x.py"], "--include '' is not a file pattern"),
        (["--include", "!.env", "--", "python", "x.py"], "--include '!.env' is not a file pattern"),
        (["--", "rlkit", "train", "configs/ppo_cartpole.yaml", "--address", "not an address"],
         "--address: 'not an address' is not an address"),
        (["--", "rlkit", "train", "configs/nope.yaml"], "configs/nope.yaml: no such file in the working dir"),
        (["--", "rlkit", "train"], "missing CONFIG"),
        ([TRAIN + " --set algo.lrr=1"], "configs/ppo_cartpole.yaml: unknown key algo.lrr (did you mean algo.lr?)"),
        (["missing.yaml"], "missing.yaml: no such file"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(project: Path, args: list[str], words: str) -> None:
    result = run_rlkit("submit", "-w", str(project), *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert words in one_error_line(result)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("entrypint: python x.py\n", "jobs.yaml: unknown key entrypint (did you mean entrypoint?)"),
        ("jobs:\n  - entrypoint: python x.py\n    gpu: 1\n", "jobs.yaml: unknown key jobs.0.gpu (did you mean jobs.0.gpus?)"),
        ("jobs: []\n", "jobs.yaml: jobs: List should have at least 1 item"),
        ("name: x\n", "jobs.yaml: entrypoint is missing: the command the job runs"),
        ("jobs:\n  - name: x\n", "jobs.yaml: jobs.0: entrypoint is missing"),
        ("entrypoint: [python\n", "jobs.yaml:2:1: YAML syntax error"),
        ("- python x.py\n", "jobs.yaml: expected a mapping of settings at the top, got list"),
        ("entrypoint: python x.py\nname: a b\n", "jobs.yaml: name: String should match pattern"),
        ("entrypoint: python x.py\ncpus: .inf\n", "jobs.yaml: cpus: Input should be a finite number"),
        ("entrypoint: " + "[" * 5000 + "]" * 5000 + "\n", "jobs.yaml: nested deeper than Python can parse"),
    ],
)
def test_a_bad_job_spec_is_one_line_and_exit_code_2(project: Path, text: str, words: str) -> None:
    (project / "jobs.yaml").write_text(text)
    result = run_rlkit("submit", "-w", str(project), str(project / "jobs.yaml"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert words in one_error_line(result)


def test_a_job_spec_file_sets_names_resources_and_env(project: Path) -> None:
    (project / "jobs.yaml").write_text(
        "jobs:\n"
        "  - name: mlp\n    entrypoint: " + TRAIN + "\n    cpus: 1\n    env: {OMP_NUM_THREADS: 1, DEBUG: true}\n"
        "  - entrypoint: python eval.py --episodes 3\n    gpus: 0.5\n"
    )
    plan = dry_run(project, str(project / "jobs.yaml"))
    mlp, other = plan["jobs"]
    assert (mlp["name"], mlp["cpus"], mlp["env_vars"]["OMP_NUM_THREADS"], mlp["env_vars"]["DEBUG"]) == ("mlp", 1.0, "1", "1")
    assert (other["name"], other["gpus"], other["cluster"]) == ("eval", 0.5, "b")


def test_the_three_argument_forms() -> None:
    assert [s.entrypoint for s in specs_from_args(["python", "-c", "print(1)"])] == ["python -c 'print(1)'"]
    assert [s.entrypoint for s in specs_from_args(["python a.py", "python b.py"])] == ["python a.py", "python b.py"]
    assert rewrite_entrypoint("rlkit train x.yaml") == "python -m rlkit train x.yaml"
    assert rewrite_entrypoint("rlkitx train") == "rlkitx train"


def test_prepare_names_a_train_job_after_its_run(project: Path) -> None:
    job = prepare(JobSpec(entrypoint=TRAIN + " --name wide -q --address 10.0.0.1:6379"), project)
    assert job.name == "wide" and job.config is not None and job.config.stop.total_steps == 2048
    resumed = prepare(JobSpec(entrypoint="rlkit train --resume /runs/x"), project)
    assert resumed.config is None and resumed.name == "rlkit"
    with pytest.raises(ConfigError, match="no such file in the working dir"):
        prepare(JobSpec(entrypoint="rlkit train other.yaml"), project)


def test_load_job_file_reports_the_file(tmp_path: Path) -> None:
    path = tmp_path / "one.yml"
    path.write_text("entrypoint: python x.py\ncpus: 2\n")
    assert load_job_file(path) == [JobSpec(entrypoint="python x.py", cpus=2)]
    with pytest.raises(BadInputError):
        specs_from_args([])


def test_logs_and_stop_of_an_unknown_job_say_where_they_looked(project: Path) -> None:
    result = run_rlkit("logs", "nope-a-1234", "--timeout", "1")
    assert result.returncode == 2
    line = one_error_line(result)
    assert "no submitted job nope-a-1234 on the clusters that answered (none)" in line
    assert "a: nothing listens at 127.0.0.1:9" in line
    stop = run_rlkit("stop", "nope-a-1234", "-y", "--cluster", "b", "--timeout", "1")
    assert stop.returncode == 2 and "not asked: b: nothing listens" in one_error_line(stop)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["stop"], "name the jobs to stop, or pass --cluster NAME --all-jobs"),
        (["stop", "--all-jobs"], "--all-jobs needs --cluster NAME"),
        (["stop", "x", "--all-jobs", "--cluster", "a"], "name the jobs to stop, or pass --cluster NAME --all-jobs"),
        (["logs", "x", "--tail", "-1"], "--tail must be 0 or more"),
        (["logs", "x", "--cluster", "nope"], "no cluster named 'nope'"),
    ],
)
def test_logs_and_stop_bad_input(project: Path, args: list[str], words: str) -> None:
    result = run_rlkit(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert words in one_error_line(result)


@pytest.mark.parametrize("command", ["submit", "logs", "stop"])
def test_job_commands_have_help_with_an_example(command: str) -> None:
    result = run_rlkit(command, "--help")
    assert result.returncode == 0
    assert "Example" in result.stdout and f"rlkit {command} " in result.stdout


def test_python_m_rlkit_runs_the_cli() -> None:
    import subprocess

    result = subprocess.run([sys.executable, "-m", "rlkit", "submit", "--help"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0 and "Send jobs to Ray clusters" in result.stdout


def test_ray_address_in_the_shell_is_hidden_while_clients_are_built_then_restored(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from rlkit.jobs.client import _named_address_only

    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://10.0.0.1:8265")
    seen: list[tuple[str | None, str | None]] = []
    inside, leave = threading.Barrier(3), threading.Event()

    def build() -> None:
        with _named_address_only():
            seen.append((os.environ.get("RAY_ADDRESS"), os.environ.get("RAY_API_SERVER_ADDRESS")))
            inside.wait()
            leave.wait()

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    inside.wait()
    assert seen == [(None, None), (None, None)]
    leave.set()
    for thread in threads:
        thread.join()
    assert os.environ["RAY_ADDRESS"] == "10.0.0.1:6379"
    assert os.environ["RAY_API_SERVER_ADDRESS"] == "http://10.0.0.1:8265"
