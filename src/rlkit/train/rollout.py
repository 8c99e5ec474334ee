"""RolloutWorker: a persistent Ray actor that steps a batch of environments.

It keeps its environments and episode state across calls, holds a numpy
copy of each policy of the run's agent mapping (the newest version it has
been handed), and returns fixed-length fragments or whole groups of
episodes, as the algorithm's ``Collection`` asks, keyed by policy and
tagged with the version that produced them.
"""

from __future__ import annotations

import pickle
import resource
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlkit.config import TrainConfig
from rlkit.train.agents import AgentMapping
from rlkit.train import envstate
from rlkit.train.algos.base import Collection
from rlkit.train.envs import SINGLE_AGENT, PolicySpec, env_factory, make_vector_env
from rlkit.train.multiagent_rollout import MultiAgentCollector
from rlkit.train.normalize import DiscountedReturn, RunningMeanStd
from rlkit.train.pettingzoo_env import MultiAgentSpec
from rlkit.train.policies import NumpyPolicy, PolicyCopy, Published

Batch = dict[str, np.ndarray]


@dataclass
class Fragment:
    """What one actor call returns; arrays are keyed by policy id."""

    worker_index: int
    policy_version: int
    env_steps: int
    batches: dict[str, Batch]
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    obs_stats: dict[str, RunningMeanStd] | None = None
    return_stats: dict[str, RunningMeanStd] | None = None
    """With ``env.normalize_reward``: per policy, the moments of the discounted returns seen."""
    peak_rss_mb: float = 0.0
    """The actor process's peak resident memory so far."""
    policy_returns: dict[str, list[float]] = field(default_factory=dict)
    """Multi-agent: per policy, each episode's mean return over that policy's agents."""
    outcomes: list[Any] = field(default_factory=list)
    """Self-play: ``selfplay.Outcome`` of each game that ended."""


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RolloutWorker:
    """Owns ``envs_per_worker`` environments and a CPU copy of each policy.

    The loop that steps them is chosen once, here: a gymnasium vector env
    for fixed-length fragments, single envs for episode groups (both serve
    the environment's one agent with one policy and no per-step lookups), or
    a PettingZoo environment's loop (``multiagent_rollout``), every policy
    acting for all its agents at once.
    """

    def __init__(self, config: TrainConfig, mapping: AgentMapping, collection: Collection,
                 worker_index: int, seed: int, multi: MultiAgentSpec | None = None) -> None:
        self.cfg = config
        self.worker_index = worker_index
        self.mapping = mapping
        # mappo's policies are actors only: their values come from the central critic.
        own_critic = collection.critic and mapping.critic_dim is None
        self.policies = {pid: NumpyPolicy(pspec, config.model, critic=own_critic)
                         for pid, pspec in self.mapping.policies.items()}
        self.obs_norm: dict[str, RunningMeanStd | None] = dict.fromkeys(self.policies)
        self.policy_versions = dict.fromkeys(self.policies, -1)
        self.rng = np.random.default_rng(seed)
        self.version = -1
        self.group_size = collection.group_size
        self.collector: MultiAgentCollector | None = None
        n = config.rollout.envs_per_worker
        self.returns: dict[str, DiscountedReturn] | None = None
        """With ``env.normalize_reward``: per policy, each (env, slot) stream's discounted return."""
        if config.env.normalize_reward:
            self.returns = {pid: DiscountedReturn(config.algo.gamma, (n, len(mapping.slots[pid])))
                            for pid in self.policies}
        if multi is not None:
            self.collector = MultiAgentCollector(config, mapping, multi, self.policies, self.obs_norm, self.rng, seed,
                                                 returns=self.returns)
            if mapping.critic_dim is not None:
                self.collector.critic = NumpyPolicy(PolicySpec((mapping.critic_dim,), "discrete", 1),
                                                    config.model, critic=True)
            self._collect = self._multi_fragment
            return
        self.pid = self.mapping.policy_of[SINGLE_AGENT]
        if self.group_size is not None:
            make = env_factory(config.env)
            self.env_list = [make() for _ in range(n)]
            self._collect = self._episode_groups
        else:
            self.vec = make_vector_env(config.env, n)
            self.obs, _ = self.vec.reset(seed=seed)
            self.ep_return = np.zeros(n)
            self.ep_length = np.zeros(n, dtype=np.int64)
            # Envs whose episode ended on the last step: their next step is a reset.
            self.resetting = np.zeros(n, dtype=bool)
            self._collect = self._fragment

    def _sync(self, box: list[Any], version: int) -> None:
        # The ref travels inside a list so Ray does not fetch it on every call:
        # only a new version is read from the object store.
        if version != self.version:
            import ray

            published: Published = ray.get(box[0])
            for pid, copy in published.policies.items():
                if copy.version != self.policy_versions[pid]:
                    self.policies[pid].load(copy.weights)
                    self.obs_norm[pid] = copy.obs_norm
                    self.policy_versions[pid] = copy.version
            if self.collector is not None:
                self._sync_multi(published)
            self.version = published.version

    def _sync_multi(self, published: Published) -> None:
        collector = self.collector
        assert collector is not None
        if published.critic is not None and collector.critic is not None:
            collector.critic.load(published.critic.weights)
        if published.opponents.keys() != collector.opponents.keys():
            pid = next(iter(self.policies))
            collector.opponents = {}
            for snapshot, copy in published.opponents.items():
                policy = NumpyPolicy(self.mapping.policies[pid], self.cfg.model, critic=False)
                policy.load(copy.weights)
                collector.opponents[snapshot] = (policy, copy.obs_norm)
            # A snapshot that left the pool is replaced in the episodes that drew it.
            gone = ~np.isin(collector.opponent_of, list(collector.opponents))
            if gone.any() and collector.opponents:
                collector.opponent_of[gone] = -1

    def _normalize(self, obs: np.ndarray, norm: RunningMeanStd | None) -> np.ndarray:
        obs = obs.astype(np.float32).reshape(len(obs), -1)
        if norm is None:
            return obs
        return norm.normalize(obs, self.cfg.env.clip_obs)

    def _stats(self, raw: np.ndarray) -> dict[str, RunningMeanStd] | None:
        return {self.pid: RunningMeanStd.of_batch(raw)} if self.cfg.env.normalize_obs else None

    def sample(self, box: list[Any], version: int) -> Fragment:
        """Bring the policies up to ``version`` (the ref in ``box``), then collect one fragment."""
        self._sync(box, version)
        return self._collect()

    def _multi_fragment(self) -> Fragment:
        assert self.collector is not None
        c = self.collector.fragment()
        return Fragment(self.worker_index, self.version, c.env_steps, c.batches, c.episode_returns,
                        c.episode_lengths, c.obs_stats, self._return_stats(), peak_rss_mb(), c.policy_returns,
                        c.outcomes)

    def _return_stats(self) -> dict[str, RunningMeanStd] | None:
        """The moments of the discounted returns since the last fragment, per policy that saw any."""
        if self.returns is None:
            return None
        return {pid: stats for pid, acc in self.returns.items() if (stats := acc.take_moments()) is not None}

    def _fragment(self) -> Fragment:
        """Step every environment ``fragment_length`` times."""
        policy, norm = self.policies[self.pid], self.obs_norm[self.pid]
        T, N = self.cfg.rollout.fragment_length, self.cfg.rollout.envs_per_worker
        scale = self.cfg.env.reward_scale
        raw_obs = np.empty((T, N, *self.obs.shape[1:]), dtype=np.float32)
        obs = np.empty((T, N, policy.spec.obs_dim), dtype=np.float32)
        actions = np.empty((T, N, policy.spec.action_dim) if policy.spec.action_kind == "continuous"
                           else (T, N), dtype=np.float32 if policy.spec.action_kind == "continuous" else np.int64)
        logprobs, values, rewards = (np.empty((T, N), np.float32) for _ in range(3))
        dones = np.empty((T, N), np.float32)
        bootstrap = np.zeros((T, N), np.float32)
        valid = np.empty((T, N), np.float32)
        returns, lengths = [], []
        discounted = None if self.returns is None else self.returns[self.pid]
        for t in range(T):
            raw_obs[t] = self.obs
            obs[t] = self._normalize(self.obs, norm)
            actions[t], logprobs[t], values[t] = policy.act(obs[t], self.rng)
            self.obs, reward, terminated, truncated, _ = self.vec.step(policy.env_actions(actions[t]))
            # NEXT_STEP autoreset: an env that finished on the previous step
            # ignored this action and returned its first observation; that
            # row is no transition and is masked out of learning.
            valid[t] = ~self.resetting
            rewards[t] = reward * scale
            done = terminated | truncated
            dones[t] = done
            if discounted is not None:
                discounted.step(rewards[t, :, None], done[:, None], valid[t, :, None] > 0)
            # Time-limit truncation is not termination: bootstrap from the value
            # of the final observation (the one just returned) instead of zero.
            cut = np.flatnonzero(truncated & ~terminated)
            if len(cut):
                bootstrap[t, cut] = policy.value(self._normalize(self.obs[cut], norm))
            self.ep_return += reward
            self.ep_length += ~self.resetting
            for i in np.flatnonzero(done):
                returns.append(float(self.ep_return[i]))
                lengths.append(int(self.ep_length[i]))
                self.ep_return[i], self.ep_length[i] = 0.0, 0
            self.resetting = done
        batch = {
            "obs": obs, "actions": actions, "logprobs": logprobs, "values": values,
            "rewards": rewards, "dones": dones, "bootstrap": bootstrap, "valid": valid,
            "last_value": policy.value(self._normalize(self.obs, norm)),
        }
        return Fragment(self.worker_index, self.version, int(valid.sum()), {self.pid: batch},
                        returns, lengths, self._stats(raw_obs), self._return_stats(), peak_rss_mb())

    def _episode_groups(self) -> Fragment:
        """Run whole groups of episodes, each group from one shared reset seed."""
        assert self.group_size is not None
        policy, norm = self.policies[self.pid], self.obs_norm[self.pid]
        G = self.group_size
        n = len(self.env_list)
        group_seeds = self.rng.integers(0, 2**31 - 1, size=n // G)
        current = [self.env_list[j].reset(seed=int(group_seeds[j // G]))[0] for j in range(n)]
        steps: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]] = [[] for _ in range(n)]
        ep_return, active = np.zeros(n), np.ones(n, dtype=bool)
        while active.any():
            idx = np.flatnonzero(active)
            raw = np.stack([current[j] for j in idx])
            obs = self._normalize(raw, norm)
            actions, logp, _ = policy.act(obs, self.rng)
            env_actions = policy.env_actions(actions)
            for k, j in enumerate(idx):
                steps[j].append((raw[k], obs[k], actions[k], logp[k]))
                current[j], reward, terminated, truncated, _ = self.env_list[j].step(env_actions[k])
                ep_return[j] += reward
                if terminated or truncated:
                    active[j] = False
        lengths = [len(s) for s in steps]
        flat = [step for s in steps for step in s]
        batch = {
            "obs": np.stack([s[1] for s in flat]),
            "actions": np.stack([s[2] for s in flat]),
            "logprobs": np.asarray([s[3] for s in flat], np.float32),
            "episode_index": np.repeat(np.arange(n), lengths),
            "episode_returns": ep_return.astype(np.float32),
            "episode_groups": np.arange(n) // G,
        }
        raw_obs = np.stack([s[0] for s in flat])
        return Fragment(self.worker_index, self.version, len(flat), {self.pid: batch},
                        [float(r) for r in ep_return], lengths, self._stats(raw_obs), peak_rss_mb=peak_rss_mb())

    def get_state(self) -> bytes | None:
        """Environment, episode and RNG state for an exact resume; None if the envs cannot be pickled."""
        if self.collector is not None:
            envs = self.collector.state()
        elif self.group_size is not None:
            envs = self.env_list
        else:
            envs = (self.vec, self.obs, self.ep_return, self.ep_length, self.resetting)
        returns = None if self.returns is None else {pid: acc.value for pid, acc in self.returns.items()}
        try:
            return envstate.dumps((envs, self.rng.bit_generator.state, returns))
        except Exception:  # an env holding a handle that cannot be pickled
            return None

    def set_state(self, state: bytes) -> None:
        # Unpickling runs code: the driver hands over only state whose
        # signature verified as this user's (train/checkpoint.py).
        envs, rng_state, *returns = pickle.loads(state)
        self.rng.bit_generator.state = rng_state
        # A checkpoint of a run without normalize_reward, or of an rlkit before it, holds no
        # returns: theirs start at zero, as at the start of an episode.
        if self.returns is not None and returns and returns[0] is not None:
            for pid, value in returns[0].items():
                self.returns[pid].value = value
        if self.collector is not None:
            self.collector.set_state(envs)
        elif self.group_size is not None:
            self.env_list = envs
        else:
            self.vec, self.obs, self.ep_return, self.ep_length, self.resetting = envs

    def ping(self) -> int:
        return self.worker_index
