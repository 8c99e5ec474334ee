"""``rlkit fetch`` and ``rlkit submit --follow --fetch`` against a real
local cluster that rlkit launches, and the receiver's refusals fed
hostile frames directly.

One module-wide cluster and one short CartPole job, sent with
``submit --follow --fetch`` from a directory that is not the job's
working dir, so that the fetch really copies (a local cluster's runs
land in the working dir, which would make the copy the source itself).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rlkit.jobs.fetch import PART_SUFFIX, Receiver, Transfer, local_manifest
from rlkit.jobs.fetch_agent import PREFIX, run_files
from tests.cli_helpers import RLKIT, launched_local_clusters, one_error_line, run_rlkit
from tests.conftest import CONFIGS

pytestmark = pytest.mark.timeout(300)

SMALL = ["--set", "stop.total_steps=2048", "--set", "rollout.num_workers=1", "--set", "rollout.envs_per_worker=4",
         "--set", "checkpoint.every_updates=4"]


@dataclass
class Fetched:
    env: dict[str, str]
    job_id: str
    source: Path  # the job's runs dir on the cluster (this machine: a local cluster)
    home: Path  # where submit --fetch ran: the runs came to home/runs/<id>
    submit: subprocess.CompletedProcess[str]
    followed: Path  # where `rlkit fetch --follow`, run while the job ran, put it
    follow: subprocess.CompletedProcess[str]


def _in(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RLKIT, *args], cwd=cwd, env={**os.environ, "COLUMNS": "200"}, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=240, check=False)


@pytest.fixture(scope="module")
def fetched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fetched]:
    base = tmp_path_factory.mktemp("fetch")
    work, home = base / "project", base / "home-dir"
    shutil.copytree(CONFIGS, work / "configs")
    home.mkdir()
    with launched_local_clusters(base, "--name", "f", "--cpus", "2") as (env, _):
        submit = subprocess.Popen([RLKIT, "submit", "-w", str(work), "--follow", "--fetch", "--", "rlkit", "train",
                                   "configs/ppo_cartpole.yaml", *SMALL], cwd=home, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "COLUMNS": "200"})
        try:
            # Meanwhile, a second copy follows the job while it runs.
            while not (jobs := json.loads(run_rlkit("status", "--json").stdout)["jobs"]) and submit.poll() is None:
                time.sleep(0.5)
            follow = _in(base, "fetch", jobs[0]["id"], "--follow", "--to", str(base / "followed"), "--json")
            out, err = submit.communicate(timeout=240)
        finally:
            submit.kill()
            submit.wait()
        result = subprocess.CompletedProcess(submit.args, submit.returncode, out, err)
        assert result.returncode == 0, result.stdout + result.stderr
        [job] = jobs
        yield Fetched(env, job["id"], Path(job["runs_dir"]), home, result, base / "followed", follow)


@pytest.fixture(autouse=True)
def _registry(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if "fetched" in request.fixturenames:
        for key, value in request.getfixturevalue("fetched").env.items():
            monkeypatch.setenv(key, value)


def _sums(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _latest_only(fetched: Fetched) -> dict[str, str]:
    source = _sums(fetched.source)
    checkpoints = sorted(p for p in source if p.endswith(".pt"))
    assert len(checkpoints) > 1  # the older ones stay behind: --checkpoints latest
    latest = checkpoints[-1]
    return {p: s for p, s in source.items() if "/checkpoints/" not in p or p in (latest, latest + ".json")}


def test_submit_follow_fetch_brings_the_run_home_with_the_latest_checkpoint(fetched: Fetched) -> None:
    got = _sums(fetched.home / "runs" / fetched.job_id)
    assert got == _latest_only(fetched)
    [run] = {p.split("/")[0] for p in got}
    assert {f"{run}/config.yaml", f"{run}/metrics.jsonl"} <= set(got) and any("/tb/events." in p for p in got)
    assert f"✓ f {fetched.job_id} {len(got)} file(s)" in fetched.submit.stdout
    evaluated = _in(fetched.home, "eval", f"runs/{fetched.job_id}/{run}", "--episodes", "2", "--json")
    assert evaluated.returncode == 0, evaluated.stderr


def test_fetch_follow_ends_with_the_finished_run_and_one_checkpoint(fetched: Fetched) -> None:
    assert fetched.follow.returncode == 0, fetched.follow.stderr
    [result] = json.loads(fetched.follow.stdout)
    assert result["ok"] and result["id"] == fetched.job_id
    # Checkpoints that earlier rounds brought are gone with the round that brought a newer one.
    assert _sums(fetched.followed / fetched.job_id) == _latest_only(fetched)


def test_a_second_fetch_sends_nothing_and_a_changed_file_comes_again(fetched: Fetched) -> None:
    again = _in(fetched.home, "fetch", fetched.job_id, "--json")
    assert again.returncode == 0, again.stderr
    [result] = json.loads(again.stdout)
    files = local_manifest(fetched.home / "runs" / fetched.job_id)
    assert (result["ok"], result["files"], result["bytes"], result["unchanged"]) == (True, 0, 0, len(files))
    [metrics] = (fetched.home / "runs" / fetched.job_id).glob("*/metrics.jsonl")
    original = metrics.read_bytes()
    metrics.write_bytes(original[:-10] + b"tampered\n")
    third = _in(fetched.home, "fetch", fetched.job_id, "--json")
    [result] = json.loads(third.stdout)
    assert (result["files"], result["unchanged"]) == (1, len(files) - 1), third.stderr
    assert result["paths"] == [metrics.relative_to(metrics.parents[1]).as_posix()]
    assert metrics.read_bytes() == original


def test_bad_input_is_one_line_and_exit_2(fetched: Fetched) -> None:
    unknown = run_rlkit("fetch", "no-such-job-1")
    assert unknown.returncode == 2 and "no submitted job no-such-job-1" in one_error_line(unknown)
    choice = run_rlkit("fetch", fetched.job_id, "--checkpoints", "some")
    assert choice.returncode == 2 and "--checkpoints some" in one_error_line(choice)
    alone = run_rlkit("submit", "--fetch", "--", "python", "-c", "pass")
    assert alone.returncode == 2 and "--fetch needs --follow" in one_error_line(alone)


def _frames(*lines: str) -> list[str]:
    return [PREFIX + line for line in lines]


def _file_frames(index: int, data: bytes, sha: str | None = None) -> list[str]:
    return _frames(f"data {index} 0 {base64.b64encode(data).decode()}",
                   f"done {index} {len(data)} {sha or hashlib.sha256(data).hexdigest()}")


def _receive(root: Path, lines: list[str]) -> Receiver:
    receiver = Receiver(root, Transfer("job"))
    for line in lines:
        receiver.feed(line)
    receiver.close()
    return receiver


@pytest.mark.parametrize("hostile", ["../evil", "/tmp/evil", "run/../../evil", "run/./x", "run//x", "run\\..\\x",
                                     "link/evil", ""])
def test_hostile_paths_are_refused_and_nothing_lands_outside(tmp_path: Path, hostile: str) -> None:
    root, outside = tmp_path / "dest", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    plan = json.dumps({"send": [["ok.txt", 2], [hostile, 4]], "same": 0})
    receiver = _receive(root, _frames(f"plan {plan}") + _file_frames(0, b"ok") + _file_frames(1, b"evil") +
                        _frames("end"))
    assert receiver.error and "refused the path" in receiver.error
    assert not receiver.ended and list(outside.iterdir()) == [] and not (tmp_path / "evil").exists()
    assert not (root / "ok.txt").exists()  # the whole plan is refused before a byte is written


def test_a_wrong_checksum_or_a_cut_leaves_no_file_that_looks_complete(tmp_path: Path) -> None:
    plan = _frames("plan " + json.dumps({"send": [["a/good", 4], ["a/bad", 4], ["a/cut", 8]], "same": 0}))
    cut = _frames(f"data 2 0 {base64.b64encode(b'half').decode()}")
    receiver = _receive(tmp_path, plan + _file_frames(0, b"good") + _file_frames(1, b"bad!", "0" * 64))
    assert "a/bad: 4 bytes received" in (receiver.error or "")
    assert (tmp_path / "a/good").read_bytes() == b"good" and not (tmp_path / "a/bad").exists()
    receiver = _receive(tmp_path / "b", plan + _file_frames(0, b"good") + _file_frames(1, b"bad!") + cut)
    assert receiver.error is None and not receiver.ended and receiver.received == ["a/good", "a/bad"]
    # The file broken off mid-way: no name of its own, and its part file removed.
    assert sorted(p.name for p in (tmp_path / "b/a").iterdir()) == ["bad", "good"]
    assert not any(p.name.endswith(PART_SUFFIX) for p in tmp_path.rglob("*"))


def test_checkpoint_choices_pick_the_newest_finished_checkpoint(tmp_path: Path) -> None:
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    for name in ("ckpt-0000004.pt", "ckpt-0000004.pt.json", "ckpt-0000008.pt", "ckpt-0000008.pt.json",
                 "ckpt-0000012.pt", ".ckpt-0000012.pt.json.x1.tmp"):
        (ckpts / name).write_text("x")
    (tmp_path / "run" / "config.yaml").write_text("x")
    assert run_files(tmp_path, "latest") == ["run/config.yaml", "run/checkpoints/ckpt-0000008.pt",
                                             "run/checkpoints/ckpt-0000008.pt.json"]
    assert run_files(tmp_path, "none") == ["run/config.yaml"]
    assert len(run_files(tmp_path, "all")) == 6
