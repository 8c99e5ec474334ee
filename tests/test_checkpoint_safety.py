"""Checkpoints handed over by others, damaged by crashes, resumed with the wrong config.

A checkpoint is data: loading one never runs code from it. A damaged newest
checkpoint gives way to the newest good one; a refused resume leaves the run
as it was; a resume after a kill logs each update once.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import signal
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlkit.cli import main
from rlkit.config import load_train_config
from rlkit.train.checkpoint import checkpoints, load_latest, save_checkpoint
from rlkit.train.learner import Learner
from rlkit.train.run import train
from tests.conftest import CONFIGS

SMALL = ("stop.total_steps=2048", "stop.target_return=null", "sync.mode=sync", "checkpoint.every_updates=2")


class WritesAFile:
    """Unpickling it creates ``path``: what a hostile checkpoint would do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def small_run(tmp_path: Path, *overrides: str) -> Path:
    cfg = load_train_config(CONFIGS / "ppo_cartpole.yaml", [f"runs_dir={tmp_path / 'runs'}", *SMALL, *overrides])
    return Path(train(cfg).run_dir)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    code = main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, [line for line in err.splitlines() if line.strip()]


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def updates_logged(run_dir: Path) -> list[int]:
    return [row["update"] for row in rows(run_dir)]


def updates_of(state: dict) -> int:
    return state["trainer"]["learner"]["updates"]


def test_a_checkpoint_that_would_run_code_is_refused_by_eval_and_resume(ray_local, tmp_path: Path, capsys) -> None:
    run_dir = small_run(tmp_path)
    marker = tmp_path / "pwned"
    good = load_latest(run_dir)
    # Someone who knows rlkit's format, checksum file included, hands over this run.
    save_checkpoint(run_dir, 99, {**good.state, "extra": WritesAFile(marker)}, keep=10, env_states=[None])
    config_before = (run_dir / "config.yaml").read_bytes()
    for args in (["eval", str(run_dir)], ["train", "--resume", str(run_dir), "--quiet"]):
        code, lines = cli(capsys, *args)
        assert code == 2 and len(lines) == 1, lines
        assert "ckpt-0000099.pt: refused: it holds objects that would run code" in lines[0]
        assert not marker.exists()
    assert (run_dir / "config.yaml").read_bytes() == config_before
    # The whole payload one such object, as a bare torch.save would write it.
    bare = tmp_path / "bare.pt"
    torch.save(WritesAFile(marker), bare)
    data = bare.read_bytes()
    Path(f"{bare}.json").write_text(json.dumps({"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}))
    code, lines = cli(capsys, "eval", str(bare))
    assert code == 2 and len(lines) == 1 and "refused" in lines[0], lines
    assert not marker.exists()


def test_env_state_not_signed_by_this_user_is_skipped_and_the_run_resumes(
        ray_local, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = small_run(tmp_path)
    marker = tmp_path / "pwned"
    good = load_latest(run_dir)
    with monkeypatch.context() as patch:
        # Signed, but with another rlkit home's key: someone else's checkpoint.
        patch.setenv("RLKIT_HOME", str(tmp_path / "someone-else"))
        save_checkpoint(run_dir, updates_of(good.state), good.state, keep=10,
                        env_states=[pickle.dumps(WritesAFile(marker))])
    code, lines = cli(capsys, "train", "--resume", str(run_dir), "--quiet", "--set", "stop.total_steps=3072")
    assert code == 0, lines
    assert len(lines) == 1 and f"{good.path.name}: environment state not signed with your key" in lines[0], lines
    assert not marker.exists()
    logged = updates_logged(run_dir)
    assert logged == list(range(1, len(logged) + 1)) and len(logged) > updates_of(good.state)


def test_a_damaged_newest_checkpoint_gives_way_to_the_newest_good_one(ray_local, tmp_path: Path, capsys) -> None:
    run_dir = small_run(tmp_path)
    *_, good, newest = checkpoints(run_dir)
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # a crash mid-write, or a full disk
    code, lines = cli(capsys, "eval", str(run_dir), "--episodes", "1")
    assert code == 0, lines
    assert lines[0] == (f"skipped {newest.name} (truncated: {len(data) // 2} of {len(data)} bytes):"
                        f" using {good.name}")
    code, lines = cli(capsys, "train", "--resume", str(run_dir), "--quiet")
    assert code == 0 and len(lines) == 1 and f"using {good.name}" in lines[0], lines
    # Each update logged once; the damaged file kept aside, out of the way of the new ones.
    logged = updates_logged(run_dir)
    assert logged == list(range(1, len(logged) + 1))
    assert Path(f"{newest}.damaged").is_file()
    assert load_latest(run_dir).state["trainer"]["global_step"] == rows(run_dir)[-1]["step"]
    for path in checkpoints(run_dir):
        flipped = bytearray(path.read_bytes())
        flipped[len(flipped) // 2] ^= 0xFF
        path.write_bytes(bytes(flipped))
    code, lines = cli(capsys, "train", "--resume", str(run_dir), "--quiet")
    assert code == 2 and len(lines) == 1, lines
    assert f"no usable checkpoint: {checkpoints(run_dir)[-1].name} (corrupt: its sha256 does not match)" in lines[0]


def test_a_resume_that_would_change_shapes_is_refused_and_the_run_stays_resumable(
        ray_local, tmp_path: Path, capsys) -> None:
    run_dir = small_run(tmp_path)
    config_before = (run_dir / "config.yaml").read_bytes()
    code, lines = cli(capsys, "train", "--resume", str(run_dir), "--set", "model.hidden_sizes=[32]")
    assert code == 2 and len(lines) == 1, lines
    assert "model: the checkpoint was trained with" in lines[0]
    assert (run_dir / "config.yaml").read_bytes() == config_before
    code, lines = cli(capsys, "train", "--resume", str(run_dir), "--quiet", "--set", "stop.total_steps=3072")
    assert code == 0 and lines == [], lines
    assert "total_steps: 3072" in (run_dir / "config.yaml").read_text()


def test_resume_after_a_kill_logs_each_update_once_in_jsonl_and_tensorboard(ray_local, tmp_path: Path) -> None:
    run_dir = small_run(tmp_path, "stop.total_steps=3072")
    # What a SIGKILL leaves after the last updates were logged, before their checkpoint was written.
    last = checkpoints(run_dir)[-1]
    last.unlink()
    Path(f"{last}.json").unlink()
    assert updates_of(load_latest(run_dir).state) < rows(run_dir)[-1]["update"]
    train(load_train_config(run_dir / "config.yaml"), resume=run_dir)
    logged = rows(run_dir)
    assert [r["update"] for r in logged] == list(range(1, len(logged) + 1))
    board = EventAccumulator(str(run_dir / "tb"))
    board.Reload()
    assert [e.step for e in board.Scalars("losses/value_loss")] == [r["step"] for r in logged]


def test_a_second_ctrl_c_stops_at_once_and_saves_no_checkpoint_ahead_of_the_log(
        ray_local, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    update = Learner.update

    def ctrl_c_twice_during_update_3(self: Learner, fragments, progress: float) -> dict:
        if self.updates == 2:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        return update(self, fragments, progress)

    monkeypatch.setattr(Learner, "update", ctrl_c_twice_during_update_3)
    # Under nohup SIGINT is ignored, and rlkit rightly leaves it so: this test
    # is about a terminal's Ctrl-C.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    sets = [arg for item in (f"runs_dir={tmp_path / 'runs'}", *SMALL, "checkpoint.every_updates=1000")
            for arg in ("--set", item)]
    try:
        code, lines = cli(capsys, "train", str(CONFIGS / "ppo_cartpole.yaml"), "--quiet", *sets)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 130 and len(lines) == 1 and "interrupted: stopped without a new checkpoint" in lines[0], lines
    [run_dir] = (tmp_path / "runs").iterdir()
    assert checkpoints(run_dir) == [] and updates_logged(run_dir) == [1, 2]


def test_an_empty_key_file_signs_nothing_that_is_trusted(tmp_path: Path) -> None:
    # With an empty key anyone can compute the HMAC: such a key verifies nothing.
    from rlkit import paths

    key = paths.checkpoint_key_file()
    paths.private_dir(key.parent)
    key.write_bytes(b"")
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    save_checkpoint(run_dir, 1, {"trainer": {}, "config": {}}, keep=1, env_states=[pickle.dumps("forged")])
    loaded = load_latest(run_dir, with_env=True)
    assert loaded.env_states is None
    assert loaded.notes and "environment state not signed with your key" in loaded.notes[0]
