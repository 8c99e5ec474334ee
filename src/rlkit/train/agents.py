"""Who plays what: the agent-to-policy mapping, and the multi-agent mode that chose it.

An environment names its agents and their spaces (``EnvSpec.agents``); the
mapping puts each agent on a policy. It is the one place that decides this:
the learner builds one model per policy of the mapping, rollout actors hold
one numpy copy per policy and key what they collect by policy.

Agents have a type, the id's prefix before ``_N`` (PettingZoo's names:
``adversary_0`` and ``agent_1`` in simple_adversary). Only agents of one type,
with equal spaces, may share a policy: parameter sharing needs one input
and one output layout.

The modes (``multiagent.mode``), each chosen once here:

    shared       one policy per agent type (parameter sharing)
    independent  one policy per agent, each with its own optimizer
    mappo        shared-type actors on their own observations; one central
                 critic of the global state and the agent's one-hot index
    self_play    the two seats of a game on one learning policy; in each
                 episode one seat is played by a frozen snapshot from a pool
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from rlkit.config import TrainConfig
from rlkit.errors import ConfigError
from rlkit.train.envs import EnvSpec, PolicySpec

DEFAULT_POLICY = "default"
"""The policy of a single-agent run; its metrics carry CleanRL's tag names unprefixed."""


def agent_type(agent_id: str) -> str:
    """``adversary_0`` -> ``adversary``; an id without a numeric suffix is its own type."""
    head, sep, tail = agent_id.rpartition("_")
    return head if sep and head and tail.isdigit() else agent_id


@dataclass(frozen=True)
class AgentMapping:
    policy_of: dict[str, str]
    """Agent id -> policy id, in the environment's agent order."""
    policies: dict[str, PolicySpec]
    """Policy id -> what its model sees and does, in the order of first use (the learner builds models in it)."""
    mode: str = "single"
    """single (a gymnasium env), shared, independent, mappo or self_play."""
    onehot: bool = False
    """Policies see their observation followed by the agent's one-hot slot among the policy's agents."""
    critic_dim: int | None = None
    """mappo: the width of the central critic's input (global state, then the agent's one-hot index)."""
    slots: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Policy id -> its agents, in the environment's order (a rollout array's slot axis)."""

    @classmethod
    def build(cls, agents: dict[str, PolicySpec], choose: Callable[[str], str]) -> AgentMapping:
        """Put each agent on ``choose(agent_id)``; refuses a policy shared by unlike agents."""
        policy_of = {agent: choose(agent) for agent in agents}
        first: dict[str, str] = {}
        for agent, policy in policy_of.items():
            other = first.setdefault(policy, agent)
            if agent_type(other) != agent_type(agent) or agents[other] != agents[agent]:
                raise ConfigError(
                    f"policy {policy}: agents {other} and {agent} are of different types or spaces,"
                    " and one policy needs one observation and action layout",
                    "map each agent type to a policy of its own",
                )
        slots: dict[str, list[str]] = {}
        for agent, policy in policy_of.items():
            slots.setdefault(policy, []).append(agent)
        return cls(policy_of, {policy: agents[agent] for policy, agent in first.items()},
                   slots={p: tuple(a) for p, a in slots.items()})

    @property
    def self_play(self) -> bool:
        return self.mode == "self_play"

    def policy_input(self, policy: str, obs: np.ndarray) -> np.ndarray:
        """What ``policy`` sees: (N, S, ...) observations of its slots -> (N, S, obs_dim) float32."""
        n, s = obs.shape[:2]
        flat = obs.reshape(n, s, -1).astype(np.float32, copy=False)
        if not self.onehot:
            return flat
        # One-hot slot index, so a shared policy can still tell its agents apart.
        return np.concatenate([flat, np.broadcast_to(np.eye(s, dtype=np.float32), (n, s, s))], axis=2)

    def critic_input(self, state: np.ndarray) -> np.ndarray:
        """mappo: (N, state_dim) global states -> (N, A, critic_dim), one row per agent of the env."""
        n, a = len(state), len(self.policy_of)
        rows = np.broadcast_to(state.reshape(n, 1, -1), (n, a, state.reshape(n, -1).shape[1]))
        return np.concatenate([rows, np.broadcast_to(np.eye(a, dtype=np.float32), (n, a, a))], axis=2)


def agent_mapping(spec: EnvSpec) -> AgentMapping:
    """The mapping of a gymnasium environment: its one agent plays ``DEFAULT_POLICY``."""
    return AgentMapping.build(spec.agents, lambda _agent: DEFAULT_POLICY)


def build_mapping(config: TrainConfig, spec: EnvSpec) -> AgentMapping:
    """The mapping of a run, from ``config.multiagent`` and the environment's agents.

    Raises ConfigError (one line) for a section that cannot apply: one on a
    gymnasium environment, a mapping naming agents the environment lacks or
    leaving one out, unlike agents on one policy, self-play outside a
    two-seat game.
    """
    ma = config.multiagent
    if spec.multi is None:
        if ma is not None:
            raise ConfigError(
                f"multiagent: env.id {spec.env_id} is a single-agent gymnasium environment",
                "remove the multiagent section, or choose a PettingZoo env.id such as mpe2:simple_spread_v3",
            )
        return agent_mapping(spec)
    if config.algo.name != "ppo":
        raise ConfigError(f"algo {config.algo.name}: trains single-agent environments only, "
                          f"and env.id {spec.env_id} has agents {', '.join(spec.agents)}", "use algo.name ppo")
    mode = ma.mode if ma is not None else "shared"
    explicit = ma.policies if ma is not None else {}
    agents = list(spec.agents)
    unknown = [k for k in explicit if k not in spec.agents and k not in {agent_type(a) for a in agents}]
    if unknown:
        raise ConfigError(
            f"multiagent.policies names {', '.join(unknown)}, which is neither an agent nor an agent type of {spec.env_id}",
            f"its agents are {', '.join(agents)}",
        )
    if mode == "self_play":
        types = {agent_type(a) for a in agents}
        if len(agents) != 2 or len(types) != 1 or spec.agents[agents[0]] != spec.agents[agents[1]]:
            raise ConfigError(
                f"multiagent.mode self_play: env.id {spec.env_id} has agents {', '.join(agents)}, "
                "and self-play needs a two-player game whose seats are alike",
                "use a game such as pettingzoo.classic:tictactoe_v3, or mode shared",
            )
        if explicit:
            raise ConfigError("multiagent.policies: self_play puts both seats on one learning policy",
                              "remove multiagent.policies")

    def choose(agent: str) -> str:
        if agent in explicit:
            return explicit[agent]
        if agent_type(agent) in explicit:
            return explicit[agent_type(agent)]
        return agent if mode == "independent" else agent_type(agent)

    mapping = AgentMapping.build(spec.agents, choose)
    onehot = bool(ma and ma.agent_onehot)
    policies = mapping.policies
    if onehot:
        policies = {p: replace(s, obs_shape=(s.obs_dim + len(mapping.slots[p]),)) for p, s in policies.items()}
    critic_dim = spec.multi.state_dim + len(agents) if mode == "mappo" else None
    return replace(mapping, policies=policies, mode=mode, onehot=onehot, critic_dim=critic_dim)
