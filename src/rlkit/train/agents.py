"""Who plays what: the agent-to-policy mapping.

An environment names its agents and their spaces (``EnvSpec.agents``); the
mapping puts each agent on a policy. It is the one place that decides this:
the learner builds one model per policy of the mapping, rollout actors hold
one numpy copy per policy and key what they collect by policy.

Agents have a type, the id's prefix before ``_N`` (PettingZoo's names:
``adversary_0`` and ``agent_1`` in simple_adversary). Only agents of one type,
with equal spaces, may share a policy: parameter sharing needs one input
and one output layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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
    """Policy id -> the spaces its agents share, in the order of first use (the learner builds models in it)."""

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
        return cls(policy_of, {policy: agents[agent] for policy, agent in first.items()})


def agent_mapping(spec: EnvSpec) -> AgentMapping:
    """The mapping of a run: the agent of a gymnasium environment plays ``DEFAULT_POLICY``.

    This is where the multi-agent modes (shared, independent, self-play,
    MAPPO) will choose, from their config section and ``spec.agents``.
    """
    return AgentMapping.build(spec.agents, lambda _agent: DEFAULT_POLICY)
