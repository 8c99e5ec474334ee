"""The rollout loop of a PettingZoo environment, for ``RolloutWorker``.

Each step, every policy acts for all its slots at once (one numpy forward
pass per policy over ``(envs x slots)`` rows); ``MultiAgentStepper`` applies
the actions of the agents that move and returns the moves that completed.
A fragment is ``fragment_length`` steps of the stepper, and each policy's
batch is time-major over its streams, one per (env copy, slot): row ``r`` of
stream ``k`` is that slot's ``r``-th completed move, right-aligned so every
stream ends at the last row and the advantage estimator sees each stream's
own next move as its next row. Streams with fewer moves (a turn-based
seat, an agent that died) are padded at the front with rows that are no
transition (``valid`` 0, ``dones`` 1, so nothing leaks across them).

Self-play: in each episode of each env copy one seat is the learner's and
the other is played by a snapshot drawn from the pool; the snapshot's moves
are played but not learned from, and the episode's outcome is reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlkit.config import TrainConfig
from rlkit.train.agents import AgentMapping
from rlkit.train.multiagent_stepper import Decision, EpisodeEnd, Moves, MultiAgentStepper
from rlkit.train.normalize import DiscountedReturn, RunningMeanStd
from rlkit.train.pettingzoo_env import MultiAgentSpec, env_factory
from rlkit.train.policies import NumpyPolicy

Batch = dict[str, np.ndarray]


@dataclass
class Collected:
    """One fragment of every policy, and what its episodes scored."""

    env_steps: int
    batches: dict[str, Batch]
    episode_returns: list[float]
    """The team's (sum over agents) for cooperative modes; the learner seat's in self-play."""
    episode_lengths: list[int]
    policy_returns: dict[str, list[float]]
    """Per policy, each episode's mean return over that policy's agents."""
    obs_stats: dict[str, RunningMeanStd] | None
    outcomes: list[Any] = field(default_factory=list)
    """self_play: ``selfplay.Outcome`` of each finished game."""


class MultiAgentCollector:
    def __init__(self, config: TrainConfig, mapping: AgentMapping, multi: MultiAgentSpec,
                 policies: dict[str, NumpyPolicy], obs_norm: dict[str, RunningMeanStd | None],
                 rng: np.random.Generator, seed: int, env_fn: Callable[[], Any] | None = None,
                 returns: dict[str, DiscountedReturn] | None = None) -> None:
        """``env_fn`` builds one environment copy; by default the one ``multi`` names, with ``env.kwargs``."""
        self.cfg = config
        self.mapping = mapping
        self.policies = policies
        self.obs_norm = obs_norm
        """The worker's own dict: it swaps in each new version's normalisers."""
        self.returns = returns
        """The worker's discounted returns (``env.normalize_reward``), stepped here over the moves learned from."""
        self.rng = rng
        self.n = config.rollout.envs_per_worker
        self.central = mapping.critic_dim is not None
        self.critic: NumpyPolicy | None = None
        """mappo: the central critic's numpy copy, loaded by the worker."""
        # A central critic's row of agent a is column agents.index(a) of critic_input.
        self.agent_index = {p: np.array([multi.agents.index(a) for a in slots])
                            for p, slots in mapping.slots.items()}
        self.stepper = MultiAgentStepper(multi, env_fn or env_factory(multi.ref, config.env.kwargs), self.n,
                                         mapping.slots, seed, global_state=self.central)
        self.decision = self.stepper.reset()
        self.opponents: dict[int, tuple[NumpyPolicy, RunningMeanStd | None]] = {}
        """self_play: the pool's snapshots, loaded by the worker."""
        self.learner_seat = np.arange(self.n) % 2
        """self_play: each env copy's learner seat in its current episode (alternating per episode)."""
        self.opponent_of = np.full(self.n, -1)

    # --- what the policies see --------------------------------------------------------------

    def _inputs(self, p: str, obs: np.ndarray, norm: RunningMeanStd | None) -> np.ndarray:
        x = self.mapping.policy_input(p, obs)
        return x if norm is None else norm.normalize(x.reshape(-1, x.shape[-1]), self.cfg.env.clip_obs).reshape(x.shape)

    def _critic_rows(self, p: str, state: np.ndarray | None) -> np.ndarray | None:
        """mappo: (N, S, critic_dim) inputs of the central critic for ``p``'s slots, from (N, state_dim)."""
        if not self.central:
            return None
        assert state is not None
        return self.mapping.critic_input(state)[:, self.agent_index[p]]

    def _values(self, p: str, x: np.ndarray, critic_rows: np.ndarray | None) -> np.ndarray:
        """(N, S) values: the policy's own critic, or the central critic of the global state."""
        if critic_rows is not None:
            assert self.critic is not None
            return self.critic.value(critic_rows.reshape(-1, critic_rows.shape[-1])).reshape(x.shape[:2])
        return self.policies[p].value(x.reshape(-1, x.shape[-1])).reshape(x.shape[:2])

    # --- self-play --------------------------------------------------------------------------

    def _new_opponents(self, envs: np.ndarray) -> None:
        from rlkit.train.selfplay import draw_opponent

        ids = list(self.opponents)
        for i in envs:
            self.opponent_of[i] = draw_opponent(ids, self.cfg.multiagent.self_play, self.rng)

    def _opponent_moves(self, p: str, raw: np.ndarray, d: Decision, actions: np.ndarray) -> None:
        """Overwrite the actions of the seats the snapshots play, each snapshot on its own rows."""
        seat = 1 - self.learner_seat
        for snapshot in np.unique(self.opponent_of):
            envs = np.flatnonzero(self.opponent_of == snapshot)
            policy, norm = self.opponents[int(snapshot)]
            x = self._inputs(p, raw, norm)[envs, seat[envs]]
            mask = None if d.action_mask[p] is None else d.action_mask[p][envs, seat[envs]]
            actions[envs, seat[envs]] = policy.act(x, self.rng, mask)[0]

    def _outcomes(self, episodes: list[EpisodeEnd]) -> list[Any]:
        from rlkit.train.selfplay import Outcome, outcome_of

        seats = next(iter(self.mapping.slots.values()))
        out = []
        for ep in episodes:
            seat = int(self.learner_seat[ep.env_index])
            out.append(Outcome(int(self.opponent_of[ep.env_index]), seat,
                               outcome_of(ep.returns[seats[seat]], ep.returns[seats[1 - seat]])))
        ended = np.array([ep.env_index for ep in episodes], dtype=np.int64)
        # Seats alternate per episode: the learner moves first in every other game.
        self.learner_seat[ended] = 1 - self.learner_seat[ended]
        self._new_opponents(ended)
        return out

    # --- the loop ---------------------------------------------------------------------------

    def fragment(self) -> Collected:
        T, N, scale = self.cfg.rollout.fragment_length, self.n, self.cfg.env.reward_scale
        self_play = self.mapping.self_play
        if self_play and (self.opponent_of < 0).any():
            self._new_opponents(np.flatnonzero(self.opponent_of < 0))
        steps: dict[str, list[dict[str, np.ndarray]]] = {p: [] for p in self.policies}
        raw_inputs: dict[str, list[np.ndarray]] = {p: [] for p in self.policies}
        returns, lengths, outcomes = [], [], []
        policy_returns: dict[str, list[float]] = {p: [] for p in self.policies}
        for _t in range(T):
            d = self.decision
            actions, extras = {}, {}
            for p, policy in self.policies.items():
                norm = self.obs_norm[p]
                raw = self.mapping.policy_input(p, d.obs[p])
                x = self._inputs(p, d.obs[p], norm)
                shape = x.shape[:2]
                mask = d.action_mask[p]
                a, logp, _ = policy.act(x.reshape(-1, x.shape[-1]), self.rng,
                                        None if mask is None else mask.reshape(-1, mask.shape[-1]))
                a = a.reshape(*shape, *a.shape[1:])
                learner = np.ones(shape, np.float32)
                if self_play:
                    self._opponent_moves(p, d.obs[p], d, a)
                    learner = (np.arange(shape[1])[None, :] == self.learner_seat[:, None]).astype(np.float32)
                acting = d.acting[p] & (learner > 0)
                raw_inputs[p].append(raw[acting])
                actions[p] = a
                critic_rows = self._critic_rows(p, d.state)
                extras[p] = {"input": x, "logprob": logp.reshape(shape),
                             "value": self._values(p, x, critic_rows), "learner": learner}
                if critic_rows is not None:
                    extras[p]["critic_in"] = critic_rows
            moves, self.decision = self.stepper.step(
                {p: policy.env_actions(actions[p].reshape(-1, *actions[p].shape[2:])).reshape(actions[p].shape)
                 for p, policy in self.policies.items()}, extras)
            for p in self.policies:
                rows = self._rows(p, moves, scale)
                steps[p].append(rows)
                if self.returns is not None:
                    self.returns[p].step(rows["rewards"], rows["dones"], rows["valid"])
            for ep in moves.episodes:
                lengths.append(ep.length)
                for p, slots in self.mapping.slots.items():
                    policy_returns[p].append(float(np.mean([ep.returns[a] for a in slots])))
            if self_play and moves.episodes:
                seats = next(iter(self.mapping.slots.values()))
                returns += [ep.returns[seats[self.learner_seat[ep.env_index]]] for ep in moves.episodes]
                outcomes += self._outcomes(moves.episodes)
            else:
                returns += [ep.team_return for ep in moves.episodes]
        batches = {p: self._batch(p, steps[p]) for p in self.policies}
        stats = None
        if self.cfg.env.normalize_obs:
            stats = {p: RunningMeanStd.of_batch(np.concatenate(raw_inputs[p])) for p in self.policies
                     if sum(len(r) for r in raw_inputs[p])}
        return Collected(T * N, batches, returns, lengths, policy_returns, stats, outcomes)

    def _rows(self, p: str, moves: Moves, scale: float) -> dict[str, np.ndarray]:
        """One step's completed moves of policy ``p``, as (N, S) arrays."""
        x = moves.extras[p]
        truncated = moves.truncated[p] & ~moves.terminated[p]
        bootstrap = np.zeros(truncated.shape, np.float32)
        if truncated.any():
            # Time-limit truncation is not termination: bootstrap from the value where the agent was cut.
            final = self._inputs(p, moves.final_obs[p], self.obs_norm[p])
            critic_rows = None
            if self.central:
                assert moves.final_state is not None
                # Each row's own final state (slots of one env may be cut at different steps).
                fs = moves.final_state[p]
                onehot = np.eye(len(self.mapping.policy_of), dtype=np.float32)[self.agent_index[p]]
                critic_rows = np.concatenate([fs, np.broadcast_to(onehot, (*fs.shape[:2], onehot.shape[1]))], axis=2)
            bootstrap = np.where(truncated, self._values(p, final, critic_rows), 0.0).astype(np.float32)
        rows = {
            "obs": x["input"], "actions": moves.action[p], "logprobs": x["logprob"], "values": x["value"],
            "rewards": moves.reward[p] * scale, "dones": (moves.terminated[p] | moves.truncated[p]),
            "bootstrap": bootstrap, "valid": moves.valid[p] & (x["learner"] > 0), "completed": moves.valid[p],
        }
        if moves.action_mask[p] is not None:
            rows["action_mask"] = moves.action_mask[p]
        if self.central:
            rows["critic_obs"] = x["critic_in"]
        return rows

    def _batch(self, p: str, steps: list[dict[str, np.ndarray]]) -> Batch:
        """Stack the steps into time-major streams, right-aligned (module docstring)."""
        S = len(self.mapping.slots[p])
        K = self.n * S
        stacked = {k: np.stack([s[k] for s in steps]).reshape(len(steps), K, *steps[0][k].shape[2:])
                   for k in steps[0]}
        completed = stacked.pop("completed")
        counts = completed.sum(0)
        L = max(int(counts.max()), 1)
        out = {k: np.zeros((L, K, *v.shape[2:]), v.dtype) for k, v in stacked.items()}
        out["dones"][:] = True
        if "action_mask" in out:
            out["action_mask"][:] = True
        for k in range(K):
            rows = np.flatnonzero(completed[:, k])
            start = L - len(rows)
            for name, v in stacked.items():
                out[name][start:, k] = v[rows, k]
        batch = {k: v.astype(np.float32) if k in ("dones", "valid") else v for k, v in out.items()}
        batch["last_value"] = self._last_values(p)
        return batch

    def _last_values(self, p: str) -> np.ndarray:
        """Each stream's next value: its open move's (a seat waiting for its turn), else the current decision's."""
        d = self.decision
        x = self._inputs(p, d.obs[p], self.obs_norm[p])
        values = self._values(p, x, self._critic_rows(p, d.state))
        has_open, open_values = self.stepper.open_extra(p, "value")
        if open_values is not None:
            values = np.where(has_open, open_values, values)
        return values.reshape(-1).astype(np.float32)

    def state(self) -> Any:
        return (self.stepper, self.decision, self.learner_seat, self.opponent_of)

    def set_state(self, state: Any) -> None:
        self.stepper, self.decision, self.learner_seat, self.opponent_of = state
