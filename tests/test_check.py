"""``rlkit check`` against a real local cluster that rlkit launches (one
CPU). One module-wide cluster, tests in file order: the last one tears it
down; the fixture's finalizer stops whatever is left, even on failure."""

from __future__ import annotations

import json
import platform
import socket
from collections.abc import Iterator
from importlib import metadata

import pytest

from rlkit import paths
from rlkit.cli import main
from tests.cli_helpers import launched_local_clusters, run_rlkit

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cluster_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    base = tmp_path_factory.mktemp("check")
    with launched_local_clusters(base, "--name", "k", "--cpus", "1", timeout=240) as (env, _records):
        yield env


@pytest.fixture(autouse=True)
def in_cluster_env(cluster_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in cluster_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("COLUMNS", "200")


def this_machine() -> dict[str, str]:
    # The cluster runs from this very environment: its versions are these.
    return {"python": platform.python_version(),
            **{name: metadata.version(name) for name in ("ray", "torch", "gymnasium", "pettingzoo", "rlkit")}}


def test_a_healthy_cluster_passes_with_its_real_versions_and_cpus() -> None:
    result = run_rlkit("check", "k", "--json", "--timeout", "90", timeout=150)
    assert result.returncode == 0, result.stderr + result.stdout
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["expected"] == this_machine()
    [cluster] = report["clusters"]
    assert cluster["cluster"] == "k" and cluster["ok"] is True and cluster["error"] is None
    [node] = cluster["nodes"]
    assert node["versions"] == this_machine()
    # What `launch --cpus 1` gave it; torch here is a CPU build and the machine has no GPU.
    assert node["head"] is True and node["cpus"] == 1.0 and node["gpus"] == 0.0 and node["cuda_devices"] == []
    assert node["actor"] == "ok" and node["problems"] == [] and node["mismatched"] == [] and node["ok"] is True
    assert set(node) == {"address", "head", "cpus", "gpus", "versions", "cuda_devices", "actor", "problems",
                         "mismatched", "ok"}


def test_a_version_mismatch_is_flagged_and_exits_3() -> None:
    gym = metadata.version("gymnasium")
    # torch differs only by its build tag: a CUDA build of the same torch is no mismatch.
    torch = metadata.version("torch").split("+")[0] + "+cu999"
    result = run_rlkit("check", "k", "--expect", "gymnasium=0.0.1", "--expect", f"torch={torch}",
                       "--timeout", "90", timeout=150)
    assert result.returncode == 3, result.stderr + result.stdout
    row = next(line for line in result.stdout.splitlines() if line.startswith("k "))
    assert gym in row and row.split()[-1] == "failed", result.stdout
    assert f"expected: python {platform.python_version()}" in result.stdout and "gymnasium 0.0.1" in result.stdout
    failures = [line for line in result.stderr.splitlines() if line.startswith("✗ ")]
    assert failures == [f"✗ k 127.0.0.1: gymnasium {gym}, expected 0.0.1"], result.stderr


def test_bad_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "k", "nope"]) == 2
    assert "error: no cluster named 'nope'" in capsys.readouterr().err
    assert main(["check", "k", "--expect", "numpy=1.0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --expect numpy=1.0: no such package") and len(err.splitlines()) == 1, err


# A bound, not a measure: the check of dead clusters must end, as --timeout promises.
@pytest.mark.timeout(60)
def test_unreachable_clusters_are_failing_rows_within_the_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["teardown", "k", "--keep-entry", "-y"]) == 0, capsys.readouterr()
    # A hand-written entry where nothing listens, beside the stopped cluster.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with paths.address_file().open("a") as file:
        file.write(f"# Cluster: gone\nhttp://127.0.0.1:{port}\n")
    capsys.readouterr()
    assert main(["check", "--timeout", "20"]) == 3
    out, err = capsys.readouterr()
    rows = [line.split() for line in out.splitlines() if line.startswith(("k ", "gone "))]
    assert [(row[0], row[-1]) for row in rows] == [("k", "failed"), ("gone", "failed")], out
    failures = {line.split()[1]: line for line in err.splitlines() if line.startswith("✗ ")}
    assert "stopped (torn down with --keep-entry)" in failures["k"], err
    assert f"127.0.0.1:{port}" in failures["gone"], err
