"""Training behaviour on a real embedded Ray: learning, resume, faults, determinism."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import ray
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlkit.config import load_train_config
from rlkit.train.agents import DEFAULT_POLICY
from rlkit.train.checkpoint import checkpoints, load_latest, load_run_config
from rlkit.train.envs import make_env, probe
from rlkit.train.evaluate import evaluate
from rlkit.train.learner import Learner
from rlkit.train.normalize import RunningMeanStd
from rlkit.train.policies import NumpyPolicy
from rlkit.train.run import train
from rlkit.train.trainer import Trainer
from tests.conftest import CONFIGS

TIMING_KEYS = {"time", "charts/SPS"}


def config(name: str, tmp_path: Path, *overrides: str):
    return load_train_config(CONFIGS / name, [f"runs_dir={tmp_path / 'runs'}", *overrides])


def metrics(run_dir: str | Path) -> list[dict]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


@contextmanager
def ctrl_c_during_update(monkeypatch: pytest.MonkeyPatch, n: int) -> Iterator[None]:
    """A terminal's Ctrl-C while update ``n`` is made (its steps counted, the update not yet).

    Python's SIGINT handler is installed for it: a suite run as a background job
    inherits SIGINT ignored, and rlkit rightly keeps it so.
    """
    update = Learner.update

    def interrupted(self: Learner, fragments, progress: float) -> dict:
        if self.updates == n - 1:
            os.kill(os.getpid(), signal.SIGINT)
        return update(self, fragments, progress)

    with monkeypatch.context() as patch:
        patch.setattr(Learner, "update", interrupted)
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


@pytest.mark.slow
def test_ppo_solves_cartpole_within_its_step_budget(ray_local, tmp_path: Path) -> None:
    # The shipped config: async with one actor, so the same steps on every machine.
    summary = train(config("ppo_cartpole.yaml", tmp_path, "stop.total_steps=200000"))
    assert summary.stop_reason == "target_return", summary
    assert summary.rolling_return is not None and summary.rolling_return >= 475
    run_dir = Path(summary.run_dir)
    saved = load_run_config(run_dir)
    assert saved.algo.name == "ppo" and saved.stop.total_steps == 200000
    rows = metrics(run_dir)
    assert rows[-1]["step"] == summary.global_step
    for tag in ("charts/episodic_return", "charts/episodic_length", "charts/SPS", "losses/value_loss",
                "losses/policy_loss", "losses/entropy", "losses/approx_kl", "losses/clipfrac",
                "losses/explained_variance"):
        assert any(tag in row for row in rows), tag
    # TensorBoard holds the same numbers under the same tags, one point per update.
    board = EventAccumulator(str(run_dir / "tb"))
    board.Reload()
    for tag in ("charts/episodic_return", "losses/value_loss", "losses/approx_kl", "charts/SPS"):
        logged = [row for row in rows if row.get(tag) is not None]
        points = board.Scalars(tag)
        assert [e.step for e in points] == [row["step"] for row in logged], tag
        assert [e.value for e in points] == pytest.approx([row[tag] for row in logged], rel=1e-6), tag
    result = evaluate(run_dir, episodes=5)
    assert result.mean_return >= 475


@pytest.mark.slow
def test_grpo_learns_cartpole(ray_local, tmp_path: Path) -> None:
    summary = train(config("grpo_cartpole.yaml", tmp_path, "stop.total_steps=250000", "stop.target_return=300"))
    rows = metrics(summary.run_dir)
    first = rows[0]["charts/episodic_return"]
    assert first < 60, first
    assert summary.rolling_return is not None and summary.rolling_return >= 300, summary
    assert all("losses/kl_ref" in row for row in rows)


@pytest.mark.slow
def test_ppo_learns_pendulum_continuous_actions(ray_local, tmp_path: Path) -> None:
    summary = train(config("ppo_pendulum.yaml", tmp_path, "stop.total_steps=120000"))
    returns = [row["charts/episodic_return"] for row in metrics(summary.run_dir) if "charts/episodic_return" in row]
    early, late = sum(returns[:5]) / 5, sum(returns[-5:]) / 5
    assert early < -900, early
    assert late > early + 400, (early, late)


@pytest.mark.parametrize("normalize_reward", ["false", "true"])
def test_ctrl_c_mid_iteration_saves_what_was_logged_and_resumes_exactly(
        ray_local, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, normalize_reward: str) -> None:
    # With normalize_reward the reward scale and each env's discounted return in progress carry over too.
    overrides = ("stop.total_steps=12288", "stop.target_return=null", "checkpoint.every_updates=1000",
                 "sync.mode=sync", f"env.normalize_reward={normalize_reward}")
    straight = train(config("ppo_cartpole.yaml", tmp_path / "a", *overrides))

    with ctrl_c_during_update(monkeypatch, 8):
        cut = train(config("ppo_cartpole.yaml", tmp_path / "b", *overrides))
    assert cut.stop_reason == "interrupted" and cut.updates == 8
    assert [p.name for p in checkpoints(Path(cut.run_dir))] == ["ckpt-0000008.pt"]
    assert load_latest(Path(cut.run_dir)).state["trainer"]["global_step"] == metrics(cut.run_dir)[-1]["step"]
    resumed = train(load_run_config(Path(cut.run_dir)), resume=Path(cut.run_dir))
    assert resumed.run_dir == cut.run_dir
    assert resumed.global_step == straight.global_step and resumed.updates == straight.updates
    # Counters, LR schedule, optimizer, RNG and env states all carried over:
    # the resumed half is identical to the uninterrupted run.
    assert without_timing(metrics(cut.run_dir)) == without_timing(metrics(straight.run_dir))


@pytest.mark.parametrize("layout", [
    ("sync.mode=sync", "rollout.num_workers=2", "rollout.envs_per_worker=8"),
    # One actor in async mode is always exactly one version behind: deterministic too.
    ("sync.mode=async", "rollout.num_workers=1"),
])
def test_same_seed_gives_the_same_metrics(ray_local, tmp_path: Path, layout: tuple[str, ...]) -> None:
    overrides = ("stop.total_steps=8192", "env.normalize_obs=true", *layout)
    one = train(config("ppo_cartpole.yaml", tmp_path / "1", *overrides))
    two = train(config("ppo_cartpole.yaml", tmp_path / "2", *overrides))
    other = train(config("ppo_cartpole.yaml", tmp_path / "3", *overrides, "seed=2"))
    assert without_timing(metrics(one.run_dir)) == without_timing(metrics(two.run_dir))
    assert without_timing(metrics(one.run_dir)) != without_timing(metrics(other.run_dir))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_killed_rollout_actor_is_replaced_and_the_run_finishes(ray_local, tmp_path: Path, mode: str) -> None:
    cfg = config("ppo_cartpole.yaml", tmp_path, "stop.total_steps=10240", "stop.target_return=null",
                 f"sync.mode={mode}")
    trainer = Trainer(cfg, probe(cfg.env, "ppo"))
    try:
        for _ in range(3):
            trainer.step()
        victim = trainer.pool.workers[0]
        ray.kill(victim)
        while trainer.stop_reason() is None:
            trainer.step()
        assert trainer.stop_reason() == "total_steps"
        assert trainer.pool.restarts >= 1
        assert trainer.pool.workers[0] != victim
        assert ray.get(trainer.pool.workers[0].ping.remote()) == 0
    finally:
        trainer.close()


def test_async_mode_respects_the_policy_lag_bound(ray_local, tmp_path: Path) -> None:
    summary = train(config("ppo_cartpole.yaml", tmp_path, "sync.mode=async", "sync.max_policy_lag=1",
                           "stop.total_steps=20480", "stop.target_return=null"))
    rows = metrics(summary.run_dir)
    assert summary.global_step >= 20480
    assert all(row["charts/policy_lag_max"] <= 1 for row in rows)
    # Workers never wait for the learner, so some fragments come from an older version.
    assert any(row["charts/policy_lag_max"] == 1 for row in rows)


def greedy_returns(run_dir: Path, obs_rms: RunningMeanStd | None, episodes: int, seed: int) -> list[float]:
    """The checkpoint's mean-action policy on Pendulum, seeing observations through ``obs_rms``."""
    loaded = load_latest(run_dir)
    cfg = load_run_config(run_dir)
    spec = probe(cfg.env, "ppo")
    policy = NumpyPolicy(spec.agents[next(iter(spec.agents))], cfg.model, critic=False)
    policy.load({k: v.numpy() for k, v in loaded.state["trainer"]["learner"]["policies"][DEFAULT_POLICY]["model"].items()})
    env, returns = make_env(cfg.env), []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        total, done = 0.0, False
        while not done:
            x = np.asarray(obs, np.float32).reshape(1, -1)
            x = x if obs_rms is None else obs_rms.normalize(x, cfg.env.clip_obs)
            obs, reward, terminated, truncated, _ = env.step(policy.env_actions(policy.act_deterministic(x))[0])
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


def test_eval_reports_mean_and_std_of_a_checkpoint(ray_local, tmp_path: Path) -> None:
    summary = train(config("ppo_pendulum.yaml", tmp_path, "stop.total_steps=4096"))
    result = evaluate(Path(summary.checkpoint), episodes=3)
    assert result.episodes == 3 and result.mean_length == 200
    assert -2000 < result.mean_return < 0 and result.std_return >= 0
    # The run normalised observations: eval sees them through the checkpoint's statistics, as training did.
    saved = load_latest(Path(summary.run_dir)).state["trainer"]["learner"]["policies"][DEFAULT_POLICY]["obs_rms"]
    with_stats = greedy_returns(Path(summary.run_dir), RunningMeanStd.from_state_dict(saved), 3, seed=10_000)
    assert result.mean_return == pytest.approx(np.mean(with_stats), rel=1e-9)
    assert result.mean_return != pytest.approx(np.mean(greedy_returns(Path(summary.run_dir), None, 3, 10_000)))


def test_normalize_reward_scales_what_the_learner_fits_and_logs_the_env_returns(ray_local, tmp_path: Path) -> None:
    overrides = ("stop.total_steps=4096", "env.reward_scale=1.0")
    raw = train(config("ppo_pendulum.yaml", tmp_path / "raw", *overrides))
    scaled = train(config("ppo_pendulum.yaml", tmp_path / "scaled", *overrides, "env.normalize_reward=true"))
    raw_rows, scaled_rows = metrics(raw.run_dir), metrics(scaled.run_dir)
    # The first fragments come from the same initial policy and seeds: the same episodes, reported as the env scored them.
    first = scaled_rows[0]["charts/episodic_return"]
    assert first == raw_rows[0]["charts/episodic_return"] and -2000 < first < -500
    # Pendulum pays down to -16 a step: raw value targets are in the tens, scaled ones near one.
    assert scaled_rows[0]["losses/value_loss"] * 100 < raw_rows[0]["losses/value_loss"], (scaled_rows[0], raw_rows[0])
    # Every real step's discounted return went into the scale the checkpoint keeps.
    policies = load_latest(Path(scaled.run_dir)).state["trainer"]["learner"]["policies"]
    assert policies[DEFAULT_POLICY]["ret_rms"]["count"] == pytest.approx(scaled.global_step + 1e-4)
    assert load_latest(Path(raw.run_dir)).state["trainer"]["learner"]["policies"][DEFAULT_POLICY]["ret_rms"] is None


def test_periodic_evaluation_is_logged_and_judges_the_target_return(ray_local, tmp_path: Path) -> None:
    summary = train(config("ppo_cartpole.yaml", tmp_path, "stop.total_steps=60000", "stop.target_return=150",
                           "eval.every_updates=2", "eval.episodes=3"))
    rows = metrics(summary.run_dir)
    evals = [(row["update"], row["eval/episodic_return"]) for row in rows if "eval/episodic_return" in row]
    assert [u for u, _ in evals] == list(range(2, summary.updates + 1, 2))
    # It stopped at the first evaluation that reached the target, while the rolling
    # return of the (exploring) training episodes was still far below it.
    assert summary.stop_reason == "target_return"
    assert evals[-1][1] >= 150 > max(v for _, v in evals[:-1])
    assert rows[-1]["charts/rolling_return"] < 150
    board = EventAccumulator(str(Path(summary.run_dir) / "tb"))
    board.Reload()
    points = board.Scalars("eval/episodic_return")
    assert [e.step for e in points] == [row["step"] for row in rows if "eval/episodic_return" in row]
    assert [e.value for e in points] == pytest.approx([v for _, v in evals], rel=1e-6)
    # The same episodes rlkit eval plays: the final checkpoint scores what the last evaluation logged.
    assert evaluate(Path(summary.checkpoint), episodes=3).mean_return == evals[-1][1]


def test_time_budget_stops_the_run(ray_local, tmp_path: Path) -> None:
    summary = train(config("ppo_cartpole.yaml", tmp_path, "stop.total_steps=null", "stop.target_return=null",
                           "stop.time_budget_s=4"))
    assert summary.stop_reason == "time_budget"
    assert 4 <= summary.wall_s < 30
