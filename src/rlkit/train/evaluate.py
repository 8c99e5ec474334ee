"""Evaluate a checkpoint's deterministic policies, without Ray.

Three kinds of run, three reports:

    single-agent       mean and std return of the greedy policy
    multi-agent        each policy's mean return and the team return
    two-seat game      win, draw and loss rates as first and as second seat
                       against an opponent: uniform random, or another run's policy

A run is a game when it trained by self-play, or its environment is a
turn-based (AEC) one with two agents.

Training's own evaluations (``eval.every_updates``) play the policies of the
version just published through ``mean_return``, on the episodes ``rlkit eval``
plays by default.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from rlkit.config import TrainConfig
from rlkit.errors import BadInputError
from rlkit.train import checkpoint as ckpt
from rlkit.train import pettingzoo_env
from rlkit.train.agents import AgentMapping, build_mapping
from rlkit.train.envs import SINGLE_AGENT, EnvSpec, make_env, probe
from rlkit.train.games import Player, SeatRates, play_match, policy_player, random_player
from rlkit.train.multiagent_stepper import EpisodeEnd, MultiAgentStepper
from rlkit.train.normalize import RunningMeanStd
from rlkit.train.policies import NumpyPolicy, Published

RANDOM_OPPONENT = "random"
SEED = 10_000
"""The first episode's reset seed; episode k resets with SEED + k."""


class _Report:
    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class EvalResult(_Report):
    checkpoint: str
    episodes: int
    mean_return: float
    std_return: float
    mean_length: float


@dataclass
class MultiAgentEvalResult(_Report):
    checkpoint: str
    episodes: int
    policy_returns: dict[str, float]
    """Policy id -> mean over episodes of the mean return of that policy's agents."""
    team_return: float
    """Mean over episodes of the sum of every agent's return."""
    std_team_return: float
    mean_length: float


@dataclass
class GameEvalResult(_Report):
    checkpoint: str
    opponent: str
    """``random``, or the opponent's checkpoint file."""
    games_per_seat: int
    first: SeatRates
    second: SeatRates


@dataclass(frozen=True)
class Policies:
    """Deterministic policies with what they are trained on: a checkpoint's, or a run's in progress."""

    config: TrainConfig
    spec: EnvSpec
    mapping: AgentMapping
    policies: dict[str, tuple[NumpyPolicy, RunningMeanStd | None]]

    @classmethod
    def of_published(cls, config: TrainConfig, spec: EnvSpec, mapping: AgentMapping,
                     published: Published) -> Policies:
        policies = {}
        for pid, copy in published.policies.items():
            policy = NumpyPolicy(mapping.policies[pid], config.model, critic=False)
            policy.load(copy.weights)
            policies[pid] = (policy, copy.obs_norm)
        return cls(config, spec, mapping, policies)

    @property
    def is_game(self) -> bool:
        multi = self.spec.multi
        return multi is not None and (self.mapping.self_play or (multi.ref.api == "aec" and len(multi.agents) == 2))

    def observe(self, policy_id: str, x: np.ndarray) -> np.ndarray:
        rms = self.policies[policy_id][1]
        return x if rms is None else rms.normalize(x, self.config.env.clip_obs)


@dataclass(frozen=True)
class _Run(Policies):
    """A loaded checkpoint's policies."""

    path: Path


def _load(target: Path) -> ckpt.Loaded:
    if target.is_dir():
        return ckpt.load_latest(target)
    if target.is_file():
        return ckpt.load_checkpoint(target)
    raise BadInputError(f"{target}: no such run directory or checkpoint file")


def _open_run(target: Path, notify: Callable[[str], None]) -> _Run:
    loaded = _load(target)
    for note in loaded.notes:
        notify(note)
    config = TrainConfig.model_validate(loaded.state["config"])
    spec = probe(config.env, config.algo.name)
    mapping = build_mapping(config, spec)
    saved = loaded.state["trainer"]["learner"]["policies"]
    policies = {}
    for pid, pspec in mapping.policies.items():
        if pid not in saved:
            raise BadInputError(f"{loaded.path}: holds no policy {pid}, which its config's mapping plays",
                                "evaluate it with the rlkit that wrote it")
        policy = NumpyPolicy(pspec, config.model, critic=False)
        policy.load({k: v.numpy() for k, v in saved[pid]["model"].items()})
        obs_rms = RunningMeanStd.from_state_dict(saved[pid]["obs_rms"]) if saved[pid]["obs_rms"] else None
        policies[pid] = (policy, obs_rms)
    return _Run(config, spec, mapping, policies, loaded.path)


def evaluate(target: Path, episodes: int = 10, seed: int = SEED,
             notify: Callable[[str], None] = ckpt.to_stderr,
             opponent: str | None = None) -> EvalResult | MultiAgentEvalResult | GameEvalResult:
    """The greedy (argmax or mean-action) policies of ``target`` over ``episodes``.

    Two-seat games play ``episodes`` games per seat against ``opponent``
    (``random``, the default, or a run directory or checkpoint of the same
    game); other runs refuse an ``opponent``. ``notify`` gets one line per
    damaged checkpoint skipped for an older one.
    """
    if episodes < 1:
        raise BadInputError(f"--episodes {episodes}: must be at least 1")
    run = _open_run(target, notify)
    if run.is_game:
        return _eval_game(run, episodes, seed, RANDOM_OPPONENT if opponent is None else opponent, notify)
    if opponent is not None:
        raise BadInputError(
            f"--opponent: {run.config.env.id} is not a two-seat game, so its run has no opponent to play",
            "leave --opponent out; it is for self-play and other two-seat game runs",
        )
    if run.spec.multi is not None:
        return _eval_multi(run, episodes, seed)
    return _eval_single(run, episodes, seed)


def mean_return(run: Policies, episodes: int, seed: int = SEED) -> float:
    """The mean return of ``episodes`` episodes of the deterministic policies; multi-agent, the team return."""
    if run.spec.multi is not None:
        return float(np.mean([e.team_return for e in _multi_episodes(run, episodes, seed)]))
    return float(np.mean(_single_episodes(run, episodes, seed)[0]))


def _eval_single(run: _Run, episodes: int, seed: int) -> EvalResult:
    returns, lengths = _single_episodes(run, episodes, seed)
    return EvalResult(str(run.path), episodes, float(np.mean(returns)), float(np.std(returns)), float(np.mean(lengths)))


def _single_episodes(run: Policies, episodes: int, seed: int) -> tuple[list[float], list[int]]:
    pid = run.mapping.policy_of[SINGLE_AGENT]
    policy = run.policies[pid][0]
    env = make_env(run.config.env)
    returns, lengths = [], []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        total, steps, done = 0.0, 0, False
        while not done:
            x = run.observe(pid, np.asarray(obs, np.float32).reshape(1, -1))
            action = policy.env_actions(policy.act_deterministic(x))[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            steps += 1
            done = terminated or truncated
        returns.append(total)
        lengths.append(steps)
    env.close()
    return returns, lengths


def _eval_multi(run: _Run, episodes: int, seed: int) -> MultiAgentEvalResult:
    ends = _multi_episodes(run, episodes, seed)
    policy_returns = {pid: float(np.mean([np.mean([e.returns[a] for a in agents]) for e in ends]))
                      for pid, agents in run.mapping.slots.items()}
    team = [e.team_return for e in ends]
    return MultiAgentEvalResult(str(run.path), episodes, policy_returns, float(np.mean(team)), float(np.std(team)),
                                float(np.mean([e.length for e in ends])))


def _multi_episodes(run: Policies, episodes: int, seed: int) -> list[EpisodeEnd]:
    multi, mapping = run.spec.multi, run.mapping
    assert multi is not None
    stepper = MultiAgentStepper(multi, pettingzoo_env.env_factory(multi.ref, run.config.env.kwargs), 1,
                                mapping.slots, seed)
    ends: list[EpisodeEnd] = []
    decision = stepper.reset()
    while len(ends) < episodes:
        actions = {}
        for pid, (policy, _) in run.policies.items():
            x = mapping.policy_input(pid, decision.obs[pid])
            n, s = x.shape[:2]
            mask = decision.action_mask[pid]
            chosen = policy.act_deterministic(run.observe(pid, x.reshape(n * s, -1)),
                                              None if mask is None else mask.reshape(n * s, -1))
            act = policy.env_actions(chosen)
            actions[pid] = act.reshape(n, s, *act.shape[1:])
        moves, decision = stepper.step(actions)
        ends.extend(moves.episodes)
    stepper.close()
    return ends[:episodes]


def _seat_player(run: _Run) -> Player:
    """The run's policies as one player: each seat played by the policy that trained it."""
    assert run.spec.multi is not None
    seats = []
    for agent in run.spec.multi.agents:
        pid = run.mapping.policy_of[agent]
        policy, rms = run.policies[pid]
        seats.append(policy_player(run.mapping, pid, policy, rms, run.config.env.clip_obs))
    return lambda obs, mask, seat: seats[seat](obs, mask, seat)


def _opponent(run: _Run, opponent: str, seed: int, notify: Callable[[str], None]) -> tuple[Player, str]:
    if opponent == RANDOM_OPPONENT:
        return random_player(np.random.default_rng(seed)), RANDOM_OPPONENT
    try:
        other = _open_run(Path(opponent), notify)
    except BadInputError as err:
        raise BadInputError(f"--opponent: {err.message}", err.hint) from None
    mine, theirs = run.spec.multi, other.spec.multi
    assert mine is not None
    hint = f"pass {RANDOM_OPPONENT}, or a run directory or checkpoint of {run.config.env.id}"
    if theirs is None or theirs.ref.canonical != mine.ref.canonical:
        raise BadInputError(f"--opponent {opponent}: its run plays {other.config.env.id}, not {run.config.env.id}", hint)
    if other.config.env.kwargs != run.config.env.kwargs:
        raise BadInputError(f"--opponent {opponent}: its run plays {run.config.env.id} with env.kwargs "
                            f"{json.dumps(other.config.env.kwargs)}, not {json.dumps(run.config.env.kwargs)}", hint)
    if not other.is_game:
        raise BadInputError(f"--opponent {opponent}: its run does not play {run.config.env.id} as a two-seat game",
                            f"pass {RANDOM_OPPONENT}, or a self-play run of {run.config.env.id}")
    return _seat_player(other), str(other.path)


def _eval_game(run: _Run, games: int, seed: int, opponent: str, notify: Callable[[str], None]) -> GameEvalResult:
    multi = run.spec.multi
    assert multi is not None
    other, name = _opponent(run, opponent, seed, notify)
    # Games are played turn by turn, through the AEC API whichever API training used.
    make = pettingzoo_env.env_factory(dataclasses.replace(multi.ref, api="aec"), run.config.env.kwargs)
    result = play_match(make, _seat_player(run), other, games, seed)
    return GameEvalResult(str(run.path), name, games, result.first, result.second)
