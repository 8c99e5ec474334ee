"""Trainer: one training iteration at a time, with everything needed to resume.

``rlkit.train.loop`` drives it, for ``rlkit train`` and Tune trials alike.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable

import numpy as np
import ray

from rlkit.config import TrainConfig
from rlkit.train.agents import AgentMapping, build_mapping
from rlkit.train.algos.base import make_algorithm
from rlkit.train.envs import EnvSpec
from rlkit.train.learner import Learner, resolve_device
from rlkit.train.policies import Published
from rlkit.train.pool import WorkerPool
from rlkit.train.rollout import Fragment

ROLLING_EPISODES = 100


class Trainer:
    def __init__(self, config: TrainConfig, spec: EnvSpec, placement: Any = None,
                 get_learner: Callable[[], Learner] | None = None, mapping: AgentMapping | None = None) -> None:
        """``get_learner`` hands over a learner built elsewhere (``rlkit train`` builds it while Ray starts)."""
        self.cfg = config
        self.spec = spec
        self.mapping = mapping or build_mapping(config, spec)
        # Actors first: their processes start while the learner is built or awaited.
        self.pool = WorkerPool(config, self.mapping, make_algorithm(config.algo).collection, placement, spec.multi)
        self.learner = get_learner() if get_learner else Learner(config, self.mapping, resolve_device(config.device))
        self.opponents: Any = None
        """self_play: the ``selfplay.OpponentPool`` of frozen snapshots the learner plays against."""
        if self.mapping.self_play:
            from rlkit.train.selfplay import OpponentPool

            self.opponents = OpponentPool(config.multiagent.self_play)
            self.opponents.admit(self._learner_copy(), 0)
        self.global_step = 0
        self.episodes = 0
        self.dropped = 0
        self.recent_returns: deque[float] = deque(maxlen=ROLLING_EPISODES)
        self.eval_return: float | None = None
        """The latest evaluation's mean return (``eval.every_updates``)."""
        self.actor_peak_rss_mb = 0.0
        self.elapsed_before = 0.0
        self.started = time.perf_counter()
        self.weights_ref = ray.put(self._publish())

    def _learner_copy(self) -> Any:
        return self.learner.publish().policies[next(iter(self.mapping.policies))]

    def _publish(self) -> Published:
        """The learner's policies and, in self-play, the pool's snapshots: one object per version."""
        published = self.learner.publish()
        if self.opponents is not None:
            published.opponents = dict(self.opponents.snapshots)
        return published

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    @property
    def rolling_return(self) -> float | None:
        return float(np.mean(self.recent_returns)) if self.recent_returns else None

    def _progress(self) -> float:
        stop = self.cfg.stop
        fractions = []
        if stop.total_steps:
            fractions.append(self.global_step / stop.total_steps)
        if stop.time_budget_s:
            fractions.append(self.elapsed / stop.time_budget_s)
        return min(1.0, max(fractions))

    def _collect(self) -> tuple[list[Fragment], list[int]]:
        """Fragments for one update, and the policy lag of each."""
        box, version = [self.weights_ref], self.learner.version
        if self.cfg.sync.mode == "sync":
            fragments = self.pool.sample_all(box, version)
            self._account(fragments)
            return fragments, [0] * len(fragments)
        # Async: take fragments as they complete until one sync-sized batch is
        # in hand; fragments older than max_policy_lag are dropped and counted.
        target = self.cfg.rollout.num_workers
        fragments, lags = [], []
        while len(fragments) < target:
            frag = self.pool.next_completed(box, version)
            self._account([frag])
            lag = version - frag.policy_version
            if lag > self.cfg.sync.max_policy_lag:
                self.dropped += 1
                continue
            fragments.append(frag)
            lags.append(lag)
        return fragments, lags

    def _account(self, fragments: list[Fragment]) -> None:
        for frag in fragments:
            self.global_step += frag.env_steps
            self.episodes += len(frag.episode_returns)
            self.recent_returns.extend(frag.episode_returns)
            self.actor_peak_rss_mb = max(self.actor_peak_rss_mb, frag.peak_rss_mb)

    def step(self) -> dict[str, float]:
        """Sample, update once, publish the new version; returns this iteration's metrics."""
        fragments, lags = self._collect()
        metrics = self.learner.update(fragments, self._progress())
        if self.opponents is not None:
            metrics.update(self._self_play(fragments))
        # One ray.put per version; actors read it from the object store.
        published = self._publish()
        self.weights_ref = ray.put(published)
        every = self.cfg.eval.every_updates
        if every is not None and self.learner.updates % every == 0:
            metrics["eval/episodic_return"] = self.eval_return = self._evaluate(published)
        returns = [r for f in fragments for r in f.episode_returns]
        lengths = [n for f in fragments for n in f.episode_lengths]
        if returns:
            # Multi-agent runs: the team's return (the learner seat's in self-play); per policy below.
            metrics["charts/episodic_return"] = float(np.mean(returns))
            metrics["charts/episodic_length"] = float(np.mean(lengths))
        for pid in self.mapping.policies if self.mapping.mode != "single" else ():
            per_policy = [r for f in fragments for r in f.policy_returns.get(pid, ())]
            if per_policy:
                metrics[f"{pid}/charts/episodic_return"] = float(np.mean(per_policy))
        if self.recent_returns:
            metrics["charts/rolling_return"] = float(np.mean(self.recent_returns))
        metrics["charts/SPS"] = self.global_step / max(self.elapsed, 1e-9)
        metrics["charts/policy_lag_min"] = float(min(lags))
        metrics["charts/policy_lag_mean"] = float(np.mean(lags))
        metrics["charts/policy_lag_max"] = float(max(lags))
        metrics["charts/dropped_fragments"] = float(self.dropped)
        metrics["charts/actor_restarts"] = float(self.pool.restarts)
        return metrics

    def _self_play(self, fragments: list[Fragment]) -> dict[str, float]:
        """Record the games, let a snapshot join the pool, and now and then play a uniform-random player."""
        from rlkit.train import games

        pool, cfg = self.opponents, self.cfg.multiagent.self_play
        updates = self.learner.updates
        pool.record(o for f in fragments for o in f.outcomes)
        pool.maybe_admit(updates, self._learner_copy)
        metrics = pool.metrics()
        if cfg.random_eval_every and updates % cfg.random_eval_every == 0:
            from rlkit.train.pettingzoo_env import env_factory
            from rlkit.train.policies import NumpyPolicy

            pid = next(iter(self.mapping.policies))
            copy = self._learner_copy()
            policy = NumpyPolicy(self.mapping.policies[pid], self.cfg.model, critic=False)
            policy.load(copy.weights)
            player = games.policy_player(self.mapping, pid, policy, copy.obs_norm, self.cfg.env.clip_obs)
            rng = np.random.default_rng(self.cfg.seed + updates)
            assert self.spec.multi is not None
            result = games.play_match(env_factory(self.spec.multi.ref, self.cfg.env.kwargs), player,
                                      games.random_player(rng), cfg.random_eval_games, self.cfg.seed + updates)
            metrics.update(games.random_rates(result))
        return metrics

    def _evaluate(self, published: Published) -> float:
        """The new version's deterministic policies on environments of their own (SB3's EvalCallback).

        Here in the driver, between updates: in sync mode the actors wait for it, in
        async mode they go on sampling the fragments already asked for.
        """
        from rlkit.train.evaluate import Policies, mean_return

        return mean_return(Policies.of_published(self.cfg, self.spec, self.mapping, published),
                           self.cfg.eval.episodes)

    def stop_reason(self) -> str | None:
        stop = self.cfg.stop
        if stop.total_steps is not None and self.global_step >= stop.total_steps:
            return "total_steps"
        if stop.target_return is not None:
            if self.cfg.eval.every_updates is not None:
                reached = self.eval_return is not None and self.eval_return >= stop.target_return
            else:
                reached = (len(self.recent_returns) == ROLLING_EPISODES
                           and np.mean(self.recent_returns) >= stop.target_return)
            if reached:
                return "target_return"
        if stop.time_budget_s is not None and self.elapsed >= stop.time_budget_s:
            return "time_budget"
        return None

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain data: what a checkpoint loads without running code."""
        return {
            "learner": self.learner.state_dict(),
            "global_step": self.global_step,
            "episodes": self.episodes,
            "dropped": self.dropped,
            "recent_returns": list(self.recent_returns),
            "eval_return": self.eval_return,
            "elapsed": self.elapsed,
            "pool": None if self.opponents is None else self.opponents.state_dict(),
        }

    def env_states(self) -> list[bytes | None]:
        """Each actor's pickled envs (None where they cannot be pickled), once the actors are quiet."""
        self.pool.drain()
        return self.pool.get_states()

    def load_state_dict(self, state: dict[str, Any], env_states: list[bytes | None] | None = None) -> None:
        """``env_states`` only from a checkpoint that verified them as this user's: they are unpickled."""
        self.learner.load_state_dict(state["learner"])
        if env_states is not None:
            self.pool.set_states(env_states)
        self.global_step = state["global_step"]
        self.episodes = state["episodes"]
        self.dropped = state["dropped"]
        self.recent_returns = deque(state["recent_returns"], maxlen=ROLLING_EPISODES)
        self.eval_return = state.get("eval_return")  # absent from checkpoints of an rlkit before eval
        self.elapsed_before = state["elapsed"]
        if self.opponents is not None:
            self.opponents.load_state_dict(state["pool"])
        self.started = time.perf_counter()
        self.weights_ref = ray.put(self._publish())

    def close(self) -> None:
        self.pool.shutdown()
