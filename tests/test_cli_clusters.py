"""The cluster commands' contracts that need no running cluster: dry runs,
bad input (one line, exit code 2), env exports, and a fast ``--help``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlkit import paths
from rlkit.clusters.records import ClusterRecord
from rlkit.clusters.registry import register
from tests.cli_helpers import RLKIT, one_error_line, run_rlkit

DESIGN_EXAMPLE = "# Cluster: lab-a\n10.21.16.30:6379\n# Cluster: lab-b\nhttp://10.21.70.164:8265\n"


def test_importing_the_cli_imports_no_ray() -> None:
    code = "import sys, rlkit.cli; assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')]"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("command", [["launch", "local"], ["status"], ["env"], ["teardown"]])
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    result = run_rlkit(*command, "--help")
    assert result.returncode == 0
    assert "Example" in result.stdout and "rlkit " in result.stdout


def test_dry_run_starts_and_writes_nothing(tmp_path: Path) -> None:
    before = set(Path("/tmp").glob("rlkit-plan-*"))
    result = run_rlkit("launch", "local", "--name", "plan", "--num-clusters", "2", "--cpus", "1", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    plans = json.loads(result.stdout)
    assert [p["name"] for p in plans] == ["plan-1", "plan-2"]
    for plan in plans:
        command = plan["command"]
        assert command[1:3] == ["start", "--head"]
        assert command[command.index("--dashboard-host") + 1] == "127.0.0.1"
        assert command[command.index("--num-cpus") + 1] == "1"
        assert plan["env"]["RAY_AUTH_MODE"] == "token" and plan["token_auth"] is True
    assert not set(plans[0]["ports"].values()) & set(plans[1]["ports"].values())
    assert not paths.address_file().exists() and not paths.rlkit_home().exists()
    assert set(Path("/tmp").glob("rlkit-plan-*")) == before


def test_dry_run_prints_the_command_in_words() -> None:
    result = run_rlkit("launch", "local", "--name", "dev", "--dry-run")
    assert result.returncode == 0
    assert "nothing is started" in result.stdout and "ray start --head" in result.stdout


def test_exposing_a_dashboard_without_a_token_warns() -> None:
    result = run_rlkit("launch", "local", "--host", "0.0.0.0", "--no-token", "--dry-run")
    assert result.returncode == 0
    assert "warning: local: the dashboard listens on 0.0.0.0 without a token" in result.stderr
    quiet = run_rlkit("launch", "local", "--host", "0.0.0.0", "--dry-run")
    assert "warning" not in quiet.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["launch", "local", "--name", "a/b"], "invalid cluster name 'a/b'"),
        (["launch", "local", "--num-clusters", "0"], "--num-clusters must be at least 1"),
        (["launch", "local", "--cpus", "-1", "--dry-run"], "--cpus must be 0 or more"),
        (["env", "nope"], "no cluster named 'nope'"),
        (["status", "nope"], "no cluster named 'nope'"),
        (["teardown", "nope", "-y"], "no cluster named 'nope'"),
        (["teardown", "-y"], "name the clusters to tear down, or pass --all"),
        (["teardown", "lab-a", "-y"], "rlkit did not launch 'lab-a' (line 2)"),
        (["status", "--watch", "--json"], "--watch and --json do not go together"),
        (["sweep", "configs/sweeps/ppo_cartpole_asha.yaml", "--include", ".env"],
         "--include goes with --cluster or --all"),
        (["launch", "local", "--name", "lab-b"], "'lab-b' is a cluster rlkit did not launch"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args: list[str], words: str) -> None:
    paths.address_file().write_text(DESIGN_EXAMPLE)
    result = run_rlkit(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert words in one_error_line(result)


def test_malformed_address_file_names_file_and_line() -> None:
    paths.address_file().write_text("# Cluster: a\n10.0.0.1:6379\n# Cluster: b\n10.0.0.2 6379\n")
    for args in (["status"], ["env", "a"], ["launch", "local", "--name", "c"], ["teardown", "--all", "-y"]):
        result = run_rlkit(*args)
        assert result.returncode == 2
        assert one_error_line(result).startswith(f"error: {paths.address_file()}:4: '10.0.0.2 6379' is more than one word")


def test_teardown_asks_before_stopping() -> None:
    register(ClusterRecord("dev", "local", "http://127.0.0.1:9", "http://127.0.0.1:9"))
    result = run_rlkit("teardown", "dev")
    assert result.returncode == 2
    assert "pass -y" in one_error_line(result)
    assert "# Cluster: dev" in paths.address_file().read_text()


def test_status_with_no_clusters_says_how_to_start_one() -> None:
    result = run_rlkit("status")
    assert result.returncode == 0
    assert "rlkit launch local" in result.stdout


def test_env_exports_the_clusters_token_path_never_the_token(tmp_path: Path) -> None:
    token = tmp_path / "dev.token"
    token.write_text("s3cret")
    register(ClusterRecord("dev", "local", "http://127.0.0.1:9", "http://127.0.0.1:9", token_path=str(token),
                           gcs_address="127.0.0.1:4567"))
    result = run_rlkit("env", "dev")
    assert result.returncode == 0
    assert result.stdout == (
        "export RAY_ADDRESS=127.0.0.1:4567\nexport RAY_API_SERVER_ADDRESS=http://127.0.0.1:9\n"
        f"export RAY_AUTH_MODE=token\nexport RAY_AUTH_TOKEN_PATH={token}\nunset RAY_AUTH_TOKEN\n"
        # The cluster listens on loopback alone: Ray's clients must not swap 127.0.0.1 for this host's address.
        "export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0\n"
    )
    assert "s3cret" not in result.stdout + result.stderr


def test_env_for_a_hand_written_entry_undoes_only_rlkits_own_token() -> None:
    paths.address_file().write_text(DESIGN_EXAMPLE)
    plain = run_rlkit("env", "lab-a", extra_env={"RAY_AUTH_TOKEN_PATH": "/home/me/.ray/auth_token"})
    assert plain.stdout == "export RAY_ADDRESS=10.21.16.30:6379\nexport RAY_API_SERVER_ADDRESS=http://10.21.16.30:8265\n"
    ours = str(paths.tokens_dir() / "dev.token")
    undo = run_rlkit("env", "lab-b", "--json", extra_env={"RAY_AUTH_TOKEN_PATH": ours})
    # Only the dashboard is known: ray.init() would refuse it in RAY_ADDRESS.
    assert json.loads(undo.stdout) == {
        "RAY_ADDRESS": None, "RAY_API_SERVER_ADDRESS": "http://10.21.70.164:8265",
        "RAY_AUTH_TOKEN_PATH": None, "RAY_AUTH_MODE": None,
    }


def test_teardown_reports_each_cluster_and_exit_code_3_when_some_fail() -> None:
    # A local cluster whose processes are gone, and a KubeRay record that has
    # lost what rlkit needs to reach its RayCluster.
    register(ClusterRecord("gone", "local", "http://127.0.0.1:9", "http://127.0.0.1:9"))
    register(ClusterRecord("kube", "kuberay", "http://127.0.0.1:8", "http://127.0.0.1:8"))
    result = run_rlkit("teardown", "--all", "-y")
    assert result.returncode == 3
    assert "gone was already stopped; entry removed" in result.stdout
    assert "✗ kube rlkit's record has no Kubernetes context" in result.stderr
    assert paths.address_file().read_text() == "# Cluster: kube\nhttp://127.0.0.1:8\n"


def test_status_watch_refreshes_until_ctrl_c() -> None:
    paths.address_file().write_text("# Cluster: hand\nhttp://127.0.0.1:1\n")
    watch = subprocess.Popen(
        [RLKIT, "status", "--watch", "--interval", "0.2", "--timeout", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # As at a terminal, whatever this runner's own SIGINT disposition is
        # (a background job starts with SIGINT ignored).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(5)
    watch.send_signal(signal.SIGINT)
    out, err = watch.communicate(timeout=60)
    assert watch.returncode == 0, err
    assert "hand" in out and "UNREACHABLE" in out


@pytest.mark.parametrize(
    "args",
    [["status"], ["env", "lab-a"], ["teardown", "--all", "-y"], ["launch", "local", "--dry-run"],
     ["submit", "--dry-run", "--", "python", "x.py"], ["logs", "x", "--timeout", "1"], ["stop", "x", "-y"]],
)
def test_rlkit_home_that_is_a_file_is_one_line(tmp_path: Path, args: list[str]) -> None:
    paths.address_file().write_text(DESIGN_EXAMPLE)
    home = tmp_path / "home-file"
    home.write_text("not a directory")
    result = run_rlkit(*args, extra_env={"RLKIT_HOME": str(home)})
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"RLKIT_HOME {home} is not a directory" in one_error_line(result)
    assert home.read_text() == "not a directory"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["launch", "--foo"], "rlkit launch: no such option: --foo (see 'rlkit launch --help')"),
        (["launch", "local", "--cpus"], "rlkit launch local: option '--cpus' requires an argument"),
        (["launch", "local", "--cpus", "many"], "rlkit launch local: invalid value for '--cpus'"),
        (["launch", "local", "--cpus", "inf"], "rlkit launch local: invalid value for '--cpus'"),
        (["launch", "local", "--num-clusters", "100000", "--dry-run"], "invalid value for '--num-clusters'"),
        (["statuss"], "rlkit: no such command 'statuss'"),
        (["status", "--timeout", "inf"], "rlkit status: invalid value for '--timeout': inf seconds"),
        (["status", "--watch", "--interval", "nan"], "rlkit status: invalid value for '--interval': nan seconds"),
        (["submit", "--cpus", "inf", "--dry-run", "--", "x"], "rlkit submit: invalid value for '--cpus': inf"),
        (["launch", "onprem", "--head", "h", "--ssh-user", "u", "--ssh-key", "k", "--timeout", "1e400"],
         "rlkit launch onprem: invalid value for '--timeout': inf seconds"),
    ],
)
def test_usage_errors_are_one_line_naming_the_command_exit_2(args: list[str], words: str) -> None:
    result = run_rlkit(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert words in one_error_line(result)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (None, "is a directory, not rlkit's record of 'bad': remove it"),
        ("[]\n", "is unreadable (a JSON list, not an object)"),
        ('{"name": "bad", "provider": "lo', "is unreadable (Unterminated string"),
    ],
)
def test_a_broken_record_is_listed_in_one_line_and_blocks_no_other_cluster(text: str | None, problem: str) -> None:
    paths.address_file().write_text("# Cluster: hand\nhttp://127.0.0.1:1\n")
    record = paths.clusters_dir() / "bad.json"
    record.parent.mkdir(parents=True)
    if text is None:
        record.mkdir()
    else:
        record.write_text(text)
    status = run_rlkit("status", "--json", "--timeout", "1")
    rows = {c["name"]: c for c in json.loads(status.stdout)["clusters"]}
    assert rows["bad"]["state"] == "BROKEN" and problem in rows["bad"]["detail"], rows["bad"]
    assert "\n" not in rows["bad"]["detail"] and rows["hand"]["state"] == "UNREACHABLE"
    bad_alone = run_rlkit("status", "bad")
    assert bad_alone.returncode == 2 and "Traceback" not in bad_alone.stderr
    assert run_rlkit("env", "hand").returncode == 0
    teardown = run_rlkit("teardown", "bad", "-y")
    if text is None:
        assert teardown.returncode != 0 and "remove it (rlkit never makes one)" in teardown.stderr
    else:
        assert teardown.returncode == 0, teardown.stderr
        assert "bad was already stopped; entry removed" in teardown.stdout
        assert not record.exists()
