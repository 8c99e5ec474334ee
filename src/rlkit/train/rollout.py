"""RolloutWorker: a persistent Ray actor that steps a batch of environments.

It keeps its environments and episode state across calls, runs the numpy
copy of the newest policy it has been handed, and returns fixed-length
fragments (PPO) or whole groups of episodes (GRPO) tagged with the policy
version that produced them.
"""

from __future__ import annotations

import pickle
import resource
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlkit.config import GRPOConfig, TrainConfig
from rlkit.train.envs import DEFAULT_POLICY, EnvSpec, env_factory, make_vector_env
from rlkit.train.normalize import RunningMeanStd
from rlkit.train.policies import NumpyPolicy

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
    peak_rss_mb: float = 0.0
    """The actor process's peak resident memory so far."""


@dataclass
class Published:
    """One policy version, put in the object store once and read by every actor."""

    version: int
    weights: dict[str, dict[str, np.ndarray]]
    obs_norm: dict[str, RunningMeanStd] | None


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RolloutWorker:
    """Owns ``envs_per_worker`` environments and a CPU copy of the policy."""

    def __init__(self, config: TrainConfig, spec: EnvSpec, worker_index: int, seed: int) -> None:
        self.cfg = config
        self.worker_index = worker_index
        self.grpo = isinstance(config.algo, GRPOConfig)
        self.policy = NumpyPolicy(spec.policies[DEFAULT_POLICY], config.model, critic=not self.grpo)
        self.rng = np.random.default_rng(seed)
        self.version = -1
        self.obs_norm: RunningMeanStd | None = None
        n = config.rollout.envs_per_worker
        if self.grpo:
            make = env_factory(config.env)
            self.env_list = [make() for _ in range(n)]
        else:
            self.vec = make_vector_env(config.env, n)
            self.obs, _ = self.vec.reset(seed=seed)
            self.ep_return = np.zeros(n)
            self.ep_length = np.zeros(n, dtype=np.int64)
            # Envs whose episode ended on the last step: their next step is a reset.
            self.resetting = np.zeros(n, dtype=bool)

    def _sync(self, box: list[Any], version: int) -> None:
        # The ref travels inside a list so Ray does not fetch it on every call:
        # only a new version is read from the object store.
        if version != self.version:
            import ray

            published: Published = ray.get(box[0])
            self.policy.load(published.weights[DEFAULT_POLICY])
            self.obs_norm = published.obs_norm[DEFAULT_POLICY] if published.obs_norm else None
            self.version = published.version

    def _normalize(self, obs: np.ndarray) -> np.ndarray:
        obs = obs.astype(np.float32).reshape(len(obs), -1)
        if self.obs_norm is None:
            return obs
        return self.obs_norm.normalize(obs, self.cfg.env.clip_obs)

    def _stats(self, raw: np.ndarray) -> dict[str, RunningMeanStd] | None:
        return {DEFAULT_POLICY: RunningMeanStd.of_batch(raw)} if self.cfg.env.normalize_obs else None

    def sample(self, box: list[Any], version: int) -> Fragment:
        """Step every environment ``fragment_length`` times (PPO)."""
        self._sync(box, version)
        T, N = self.cfg.rollout.fragment_length, self.cfg.rollout.envs_per_worker
        scale = self.cfg.env.reward_scale
        raw_obs = np.empty((T, N, *self.obs.shape[1:]), dtype=np.float32)
        obs = np.empty((T, N, self.policy.spec.obs_dim), dtype=np.float32)
        actions = np.empty((T, N, self.policy.spec.action_dim) if self.policy.spec.action_kind == "continuous"
                           else (T, N), dtype=np.float32 if self.policy.spec.action_kind == "continuous" else np.int64)
        logprobs, values, rewards = (np.empty((T, N), np.float32) for _ in range(3))
        dones = np.empty((T, N), np.float32)
        bootstrap = np.zeros((T, N), np.float32)
        valid = np.empty((T, N), np.float32)
        returns, lengths = [], []
        for t in range(T):
            raw_obs[t] = self.obs
            obs[t] = self._normalize(self.obs)
            actions[t], logprobs[t], values[t] = self.policy.act(obs[t], self.rng)
            self.obs, reward, terminated, truncated, _ = self.vec.step(self.policy.env_actions(actions[t]))
            # NEXT_STEP autoreset: an env that finished on the previous step
            # ignored this action and returned its first observation; that
            # row is no transition and is masked out of learning.
            valid[t] = ~self.resetting
            rewards[t] = reward * scale
            done = terminated | truncated
            dones[t] = done
            # Time-limit truncation is not termination: bootstrap from the value
            # of the final observation (the one just returned) instead of zero.
            cut = np.flatnonzero(truncated & ~terminated)
            if len(cut):
                bootstrap[t, cut] = self.policy.value(self._normalize(self.obs[cut]))
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
            "last_value": self.policy.value(self._normalize(self.obs)),
        }
        return Fragment(self.worker_index, self.version, int(valid.sum()), {DEFAULT_POLICY: batch},
                        returns, lengths, self._stats(raw_obs), peak_rss_mb())

    def sample_groups(self, box: list[Any], version: int) -> Fragment:
        """Run whole groups of episodes, each group from one shared reset seed (GRPO)."""
        assert isinstance(self.cfg.algo, GRPOConfig)
        self._sync(box, version)
        G = self.cfg.algo.group_size
        n = len(self.env_list)
        group_seeds = self.rng.integers(0, 2**31 - 1, size=n // G)
        current = [self.env_list[j].reset(seed=int(group_seeds[j // G]))[0] for j in range(n)]
        steps: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]] = [[] for _ in range(n)]
        ep_return, active = np.zeros(n), np.ones(n, dtype=bool)
        while active.any():
            idx = np.flatnonzero(active)
            raw = np.stack([current[j] for j in idx])
            obs = self._normalize(raw)
            actions, logp, _ = self.policy.act(obs, self.rng)
            env_actions = self.policy.env_actions(actions)
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
        return Fragment(self.worker_index, self.version, len(flat), {DEFAULT_POLICY: batch},
                        [float(r) for r in ep_return], lengths, self._stats(raw_obs), peak_rss_mb())

    def get_state(self) -> bytes | None:
        """Environment, episode and RNG state for an exact resume; None if the envs cannot be pickled."""
        envs = self.env_list if self.grpo else (self.vec, self.obs, self.ep_return, self.ep_length, self.resetting)
        try:
            return pickle.dumps((envs, self.rng.bit_generator.state))
        except Exception:  # an env holding a handle that cannot be pickled
            return None

    def set_state(self, state: bytes) -> None:
        # Unpickling runs code: the driver hands over only state whose
        # signature verified as this user's (train/checkpoint.py).
        envs, rng_state = pickle.loads(state)
        self.rng.bit_generator.state = rng_state
        if self.grpo:
            self.env_list = envs
        else:
            self.vec, self.obs, self.ep_return, self.ep_length, self.resetting = envs

    def ping(self) -> int:
        return self.worker_index
