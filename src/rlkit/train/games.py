"""Matches of two players on a two-seat turn-based PettingZoo game, through its AEC API.

Seats are in the environment's order: seat 0 is ``possible_agents[0]``, who
moves first in tictactoe and connect_four. A match plays ``games_per_seat``
games with the player in each seat and reports its win, draw and loss
rates per seat: a first-move advantage shows as the gap between the two.

Self-play training measures its learner against ``random_player`` with this
(``random_rates`` names those metrics); ``rlkit eval`` reports matches too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from rlkit.train.agents import AgentMapping
from rlkit.train.normalize import RunningMeanStd
from rlkit.train.policies import NumpyPolicy
from rlkit.train.selfplay import outcome_of

Player = Callable[[Any, np.ndarray | None, int], int]
"""(raw observation the env gave the seat, its action mask or None, seat index 0/1) -> action."""


def _parts(raw: Any) -> tuple[Any, np.ndarray | None]:
    """A classic game's observation dict -> (the observation proper, the boolean action mask)."""
    if isinstance(raw, Mapping) and "action_mask" in raw:
        return raw["observation"], np.asarray(raw["action_mask"], dtype=bool)
    return raw, None


def random_player(rng: np.random.Generator) -> Player:
    """A player that picks uniformly among the legal actions (it needs the action mask)."""

    def play(_obs: Any, mask: np.ndarray | None, _seat: int) -> int:
        if mask is None:
            raise ValueError("random_player needs the game's action mask to know the legal actions")
        return int(rng.choice(np.flatnonzero(mask)))

    return play


def policy_player(mapping: AgentMapping, policy_id: str, policy: NumpyPolicy,
                  obs_norm: RunningMeanStd | None, clip_obs: float) -> Player:
    """A player that takes ``policy``'s most likely legal action, seeing what it saw in training.

    The seat is the policy's slot (its one-hot index, when the mapping appends
    one): in a two-seat game a policy serving both seats has them as slots 0
    and 1; one serving a single seat has one slot.
    """
    slots = len(mapping.slots[policy_id])

    def play(obs: Any, mask: np.ndarray | None, seat: int) -> int:
        observation, _ = _parts(obs)
        o = np.asarray(observation, dtype=np.float32)
        slot = min(seat, slots - 1)
        seen = np.zeros((1, slots, *o.shape), np.float32)
        seen[0, slot] = o
        x = mapping.policy_input(policy_id, seen)[0, slot][None]
        if obs_norm is not None:
            x = obs_norm.normalize(x, clip_obs)
        return int(policy.act_deterministic(x, None if mask is None else mask[None])[0])

    return play


@dataclass(frozen=True)
class SeatRates:
    """A player's results from one seat."""

    games: int
    win: float
    draw: float
    loss: float


@dataclass(frozen=True)
class MatchResult:
    """The player's rates as first and as second seat."""

    first: SeatRates
    second: SeatRates


def _play_game(env: Any, players: Mapping[str, Player], seed: int) -> dict[str, float]:
    """One game from ``env.reset(seed=seed)``; returns each agent's total reward.

    Raises RuntimeError when a player picks an action its mask forbids:
    pettingzoo would end the game and score it as that player's loss,
    hiding the bug as a bad result.
    """
    env.reset(seed=seed)
    agents = list(env.possible_agents)
    returns = dict.fromkeys(agents, 0.0)
    for agent in env.agent_iter():
        # last() holds what the agent earned since its previous move, the end of game included.
        obs, reward, terminated, truncated, _ = env.last()
        returns[agent] += float(reward)
        if terminated or truncated:
            env.step(None)
            continue
        _, mask = _parts(obs)
        if mask is None and isinstance(env.action_space(agent), spaces.Discrete):
            # A game without masks (rock-paper-scissors) allows every action: saying so lets any player choose.
            mask = np.ones(int(env.action_space(agent).n), dtype=bool)
        action = players[agent](obs, mask, agents.index(agent))
        if mask is not None and not (0 <= action < len(mask) and mask[action]):
            raise RuntimeError(f"{agent} played illegal action {action}; legal: {np.flatnonzero(mask).tolist()}")
        env.step(action)
    return returns


def play_match(make_env: Callable[[], Any], player: Player, opponent: Player,
               games_per_seat: int, seed: int) -> MatchResult:
    """``games_per_seat`` games with ``player`` first, then as many with it second; game g of seat s resets with seed + s * games_per_seat + g."""
    if games_per_seat < 1:
        raise ValueError(f"play_match: games_per_seat is {games_per_seat}, and a match needs at least one game per seat")
    env = make_env()
    try:
        agents = list(env.possible_agents)
        if len(agents) != 2:
            raise ValueError(f"play_match: a match needs a two-seat game, and this one has agents {', '.join(agents)}")
        rates = []
        for seat in (0, 1):
            mine, theirs = agents[seat], agents[1 - seat]
            tally = {1: 0, 0: 0, -1: 0}
            for game in range(games_per_seat):
                returns = _play_game(env, {mine: player, theirs: opponent}, seed + seat * games_per_seat + game)
                tally[outcome_of(returns[mine], returns[theirs])] += 1
            rates.append(SeatRates(games_per_seat, tally[1] / games_per_seat, tally[0] / games_per_seat,
                                   tally[-1] / games_per_seat))
    finally:
        env.close()
    return MatchResult(rates[0], rates[1])


def random_rates(result: MatchResult) -> dict[str, float]:
    """A match against ``random_player`` as self-play metrics."""
    return {
        "selfplay/random_first_win": result.first.win,
        "selfplay/random_first_loss": result.first.loss,
        "selfplay/random_second_win": result.second.win,
        "selfplay/random_second_loss": result.second.loss,
    }
