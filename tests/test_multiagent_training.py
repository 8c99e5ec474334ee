"""Multi-agent training on real PettingZoo environments and a real embedded Ray.

Learning tests run the shipped configs on smaller budgets, in sync mode with
a fixed seed (so each is one reproducible run, not a draw)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
import yaml

from rlkit.config import load_train_config
from rlkit.sweep import load_sweep, run_sweep
from rlkit.train import pettingzoo_env as pz
from rlkit.train.agents import build_mapping
from rlkit.train.checkpoint import load_latest, load_run_config
from rlkit.train.envs import probe
from rlkit.train.evaluate import evaluate
from rlkit.train.learner import Learner
from rlkit.train.multiagent_stepper import MultiAgentStepper
from rlkit.train.policies import NumpyPolicy
from rlkit.train.rollout import RolloutWorker
from rlkit.train.run import train
from rlkit.train.trainer import Trainer
from tests.cli_helpers import run_rlkit
from tests.conftest import CONFIGS
from tests.test_pettingzoo_env import KAZ, KAZ_KWARGS
from tests.test_training import ctrl_c_during_update, metrics, without_timing


def config(name: str, tmp_path: Path, *overrides: str):
    return load_train_config(CONFIGS / name, [f"runs_dir={tmp_path / 'runs'}", *overrides])


def mean_returns(env_id: str, kwargs: dict, players: dict, episodes: int, seed: int = 0) -> dict[str, float]:
    """Each agent's mean return when ``players[agent]`` (observation rows -> actions, or None for
    uniformly random actions) plays it."""
    multi = pz.probe(env_id, kwargs)
    stepper = MultiAgentStepper(multi, pz.env_factory(multi.ref, kwargs), 8, {a: (a,) for a in multi.agents}, seed)
    rng = np.random.default_rng(seed)
    decision = stepper.reset()
    ends = []
    while len(ends) < episodes:
        actions = {a: (rng.integers(0, multi.spaces[a][1].n, (8, 1)) if players.get(a) is None
                       else players[a](decision.obs[a][:, 0]).reshape(8, 1)) for a in multi.agents}
        moves, decision = stepper.step(actions)
        ends += moves.episodes
    return {a: float(np.mean([e.returns[a] for e in ends[:episodes]])) for a in multi.agents}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ppo_simple_spread_shared.yaml", "mappo_simple_spread.yaml"])
def test_simple_spread_teams_beat_the_random_policy(ray_local, tmp_path: Path, name: str) -> None:
    cfg = config(name, tmp_path, "stop.total_steps=40000")
    baseline = sum(mean_returns(cfg.env.id, cfg.env.kwargs, {}, episodes=400).values())
    summary = train(cfg)
    rows = metrics(summary.run_dir)
    assert "agent/charts/episodic_return" in rows[-1] and "agent/losses/policy_loss" in rows[-1]
    if cfg.multiagent.mode == "mappo":
        assert "critic/losses/value_loss" in rows[-1] and "agent/losses/value_loss" not in rows[-1]
    # The last 100 episodes' team return, against random play's (about -82).
    assert summary.rolling_return > baseline + 8, (summary.rolling_return, baseline)


@pytest.mark.slow
def test_independent_policies_over_unlike_spaces_train_and_improve(ray_local, tmp_path: Path) -> None:
    summary = train(config("ppo_simple_adversary_independent.yaml", tmp_path, "stop.total_steps=48000"))
    state = load_latest(Path(summary.run_dir)).state
    cfg = load_train_config(None, base=state["config"])
    mapping = build_mapping(cfg, probe(cfg.env, "ppo"))
    greedy = {}
    for pid, saved in state["trainer"]["learner"]["policies"].items():
        policy = NumpyPolicy(mapping.policies[pid], cfg.model, critic=False)
        policy.load({k: v.numpy() for k, v in saved["model"].items()})
        greedy[pid] = policy.act_deterministic
    # Against the same (random) others, each trained policy earns more than random play in its seat:
    # the adversary, who must guess the goal, and the good agents, who must cover it.
    env, kwargs = cfg.env.id, cfg.env.kwargs
    random = mean_returns(env, kwargs, {}, episodes=400)
    adversary = mean_returns(env, kwargs, {"adversary_0": greedy["adversary_0"]}, episodes=400)
    good = mean_returns(env, kwargs, {"agent_0": greedy["agent_0"], "agent_1": greedy["agent_1"]}, episodes=400)
    assert adversary["adversary_0"] > random["adversary_0"] + 3, (adversary, random)
    assert good["agent_0"] > random["agent_0"] + 1 and good["agent_1"] > random["agent_1"] + 1, (good, random)


def test_reward_normalisation_keeps_a_scale_per_policy_and_reports_the_envs_returns(ray_local, tmp_path: Path) -> None:
    overrides = ("stop.total_steps=1600", "env.reward_scale=1.0")
    raw = train(config("ppo_simple_adversary_independent.yaml", tmp_path / "raw", *overrides))
    scaled = train(config("ppo_simple_adversary_independent.yaml", tmp_path / "scaled", *overrides,
                          "env.normalize_reward=true", "eval.every_updates=1", "eval.episodes=2"))
    # The first fragments are the same episodes, reported as the environment scored them.
    first, first_raw = metrics(scaled.run_dir)[0], metrics(raw.run_dir)[0]
    for tag in ("charts/episodic_return", "adversary_0/charts/episodic_return", "agent_0/charts/episodic_return"):
        assert first[tag] == first_raw[tag], tag
    assert first["adversary_0/losses/value_loss"] < first_raw["adversary_0/losses/value_loss"] / 10
    # One scale per policy, each over every move its agent made (one agent each, one move a step).
    policies = load_latest(Path(scaled.run_dir)).state["trainer"]["learner"]["policies"]
    assert {pid: p["ret_rms"]["count"] for pid, p in policies.items()} == pytest.approx(
        dict.fromkeys(("adversary_0", "agent_0", "agent_1"), scaled.global_step + 1e-4))
    assert policies["adversary_0"]["ret_rms"]["var"] != policies["agent_0"]["ret_rms"]["var"]
    # Evaluated after each update, by the team's return, as rlkit eval scores the checkpoint.
    rows = metrics(scaled.run_dir)
    assert all("eval/episodic_return" in row for row in rows)
    assert rows[-1]["eval/episodic_return"] == evaluate(Path(scaled.run_dir), episodes=2).team_return


@pytest.mark.slow
def test_tictactoe_self_play_beats_a_random_player_from_either_seat(ray_local, tmp_path: Path) -> None:
    summary = train(config("selfplay_tictactoe.yaml", tmp_path))
    rows = metrics(summary.run_dir)
    assert rows[-1]["selfplay/pool_size"] > 1 and "selfplay/win_rate" in rows[-1]
    result = run_rlkit("eval", summary.run_dir, "--opponent", "random", "--episodes", "500", "--json")
    assert result.returncode == 0, result.stderr
    rates = json.loads(result.stdout)
    assert rates["first"]["win"] >= 0.85 and rates["second"]["loss"] <= 0.10, rates


def test_agents_that_die_are_masked_and_a_run_with_deaths_completes(ray_local, tmp_path: Path) -> None:
    overrides = (f"env.id={KAZ}", f"env.kwargs={json.dumps(KAZ_KWARGS)}", "rollout.num_workers=1",
                 "rollout.envs_per_worker=4", "rollout.fragment_length=60")
    cfg = config("ppo_kaz_shared.yaml", tmp_path, *overrides, "stop.total_steps=720")
    spec = probe(cfg.env, "ppo")
    mapping = build_mapping(cfg, spec)
    learner = Learner(cfg, mapping, torch.device("cpu"))
    worker = RolloutWorker(cfg, mapping, learner.algorithm.collection, 0, seed=3, multi=spec.multi)
    worker._sync([ray.put(learner.publish())], learner.version)
    # Count the agent-steps the environments played: each is one row to learn from, no more.
    played = {p: 0 for p in mapping.policies}
    step = worker.collector.stepper.step

    def counting_step(actions, extras=None):
        for p in played:
            played[p] += int(worker.collector.decision.acting[p].sum())
        return step(actions, extras)

    worker.collector.stepper.step = counting_step
    frag = worker.sample([None], learner.version)
    full = 60 * 4 * 2  # steps x envs x agents of a type, had nobody died
    for p, batch in frag.batches.items():
        valid = batch["valid"] > 0
        assert valid.sum() == played[p] < full, (p, played[p])
        # Rows of absent agents are padding: no observation, no reward, and they end no stream.
        assert not batch["obs"][~valid].any() and not batch["rewards"][~valid].any()
        assert batch["dones"][~valid].all()
    metrics_ = learner.update([frag], 0.0)
    assert np.isfinite([metrics_["archer/losses/policy_loss"], metrics_["knight/losses/policy_loss"]]).all()

    summary = train(cfg)
    assert summary.stop_reason == "total_steps" and summary.episodes > 0
    last = metrics(summary.run_dir)[-1]
    assert {"archer/charts/episodic_return", "knight/charts/episodic_return", "charts/episodic_return"} <= last.keys()


def test_a_self_play_run_resumes_exactly_pool_included(ray_local, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # Small games, a snapshot every 2 updates and a random-player match every 3: by update 4
    # the pool, its results window and the actors' opponents all carry state; so do the
    # reward scale and each seat's discounted return in progress.
    overrides = ("stop.total_steps=6144", "rollout.envs_per_worker=8", "rollout.fragment_length=32",
                 "multiagent.self_play.snapshot_every=2", "multiagent.self_play.random_eval_every=3",
                 "multiagent.self_play.random_eval_games=10", "checkpoint.every_updates=1000",
                 "env.normalize_reward=true")
    straight = train(config("selfplay_tictactoe.yaml", tmp_path / "a", *overrides))
    with ctrl_c_during_update(monkeypatch, 5):
        cut = train(config("selfplay_tictactoe.yaml", tmp_path / "b", *overrides))
    assert cut.stop_reason == "interrupted" and cut.updates == 5
    saved = load_latest(Path(cut.run_dir)).state["trainer"]["pool"]
    assert len(saved["snapshots"]) == 3
    resumed = train(load_run_config(Path(cut.run_dir)), resume=Path(cut.run_dir))
    assert resumed.updates == straight.updates
    rows = metrics(cut.run_dir)
    assert rows[-1]["selfplay/pool_size"] == metrics(straight.run_dir)[-1]["selfplay/pool_size"]
    assert without_timing(rows) == without_timing(metrics(straight.run_dir))


def test_a_killed_rollout_actor_of_a_multi_agent_run_is_replaced(ray_local, tmp_path: Path) -> None:
    cfg = config("mappo_simple_spread.yaml", tmp_path, "stop.total_steps=2000", "rollout.envs_per_worker=4")
    trainer = Trainer(cfg, probe(cfg.env, "ppo"))
    try:
        trainer.step()
        victim = trainer.pool.workers[1]
        ray.kill(victim)
        while trainer.stop_reason() is None:
            trainer.step()
        assert trainer.pool.restarts >= 1 and trainer.pool.workers[1] != victim
        assert ray.get(trainer.pool.workers[1].ping.remote()) == 1
    finally:
        trainer.close()


def test_a_multi_agent_sweep_runs_asha_and_writes_a_best_config(ray_local, tmp_path: Path) -> None:
    sweep = {
        "name": "ma", "base": str(CONFIGS / "ppo_simple_spread_shared.yaml"),
        "base_set": {"stop.total_steps": 1600, "rollout.envs_per_worker": 4},
        "metric": "charts/rolling_return", "mode": "max",
        "space": {"algo.lr": {"grid": [7.0e-4, 1.0e-6]}},
        "scheduler": {"type": "asha", "time_attr": "training_iteration", "max_t": 8, "grace_period": 2,
                      "reduction_factor": 2},
        "resources": {"learner_cpus": 0, "rollout_workers": 1, "cpus_per_worker": 1},
        "storage_path": str(tmp_path / "sweeps"), "search": {"type": "random", "seed": 0},
        "checkpoint_every": 4,
    }
    path = tmp_path / "ma.yaml"
    path.write_text(yaml.safe_dump(sweep))
    result = run_sweep(load_sweep(path))
    assert result.state == "finished" and len(result.trials) == 2
    assert all(t.status == "TERMINATED" for t in result.trials)
    best = yaml.safe_load(Path(result.best_config or "").read_text())
    assert best["env"]["id"] == "mpe2:simple_spread_v3" and best["multiagent"]["mode"] == "shared"
    assert any(t.checkpoint and Path(t.checkpoint, "checkpoints").is_dir() for t in result.trials)
