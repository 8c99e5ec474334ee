"""PettingZoo environments: which ``env.id`` names one, how to build it, and who may share a policy.

Spellings accepted for ``env.id`` (family = mpe2, classic, butterfly, sisl):

    mpe2:simple_spread_v3                       module:name, as the issue and the docs write it
    pettingzoo.classic:tictactoe_v3             (and the import path pettingzoo.classic.tictactoe_v3)
    classic/tictactoe-v3                        pettingzoo.make's registry id (also classic/tictactoe_v3)

pettingzoo 1.27 deprecated building an environment by importing its module
(the import warns), so pettingzoo families are built with ``pettingzoo.make``;
mpe2 has no registry and is built from its module. The parallel API is used
where the environment offers it, the AEC API for turn-based games.

Nothing here imports an environment family until an id asks for it: a family
whose extra is not installed is one line naming ``rlkit[EXTRA]``.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import pkgutil
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from gymnasium import spaces

from rlkit.errors import ConfigError

Api = Literal["parallel", "aec"]

# Family -> the rlkit extra that installs it, and the top-level modules that extra provides.
_EXTRAS: dict[str, tuple[str, frozenset[str]]] = {
    "mpe2": ("mpe", frozenset({"mpe2", "pygame", "scipy"})),
    "classic": ("classic", frozenset({"pygame", "chess"})),
    "butterfly": ("butterfly", frozenset({"pygame", "pymunk"})),
    "sisl": ("sisl", frozenset({"pygame", "pymunk", "scipy", "Box2D"})),
}
_PIP_NAMES = {"pygame": "pygame-ce", "Box2D": "box2d"}
# Names users carry over from older releases, with where they went.
_GONE = {
    "waterworld": "waterworld was removed from pettingzoo in 1.27",
}
_ENV_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*_v\d+")


def is_pettingzoo_id(env_id: str) -> bool:
    """Whether ``env_id`` is meant as a PettingZoo environment rather than a gymnasium id."""
    head = re.split(r"[:/.]", env_id, maxsplit=1)[0]
    return head in ("pettingzoo", "mpe2", "mpe") or (("/" in env_id) and head in _EXTRAS)


@dataclass(frozen=True)
class PettingZooRef:
    """A resolved ``env.id``: the family, the versioned name, and the API rlkit steps it with."""

    env_id: str
    """As the user wrote it (what messages quote)."""
    family: str
    name: str
    """Versioned module name, e.g. ``simple_spread_v3``."""
    api: Api

    @property
    def canonical(self) -> str:
        module = "mpe2" if self.family == "mpe2" else f"pettingzoo.{self.family}"
        return f"{module}:{self.name}"


@contextmanager
def _quiet() -> Iterator[None]:
    # pettingzoo's deprecated module imports and gymnasium's checks warn on
    # import and construction; a user's run output is not the place for them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _split(env_id: str) -> tuple[str, str]:
    """(family, name as typed) from any accepted spelling."""
    if ":" in env_id:
        module, _, name = env_id.partition(":")
    elif "/" in env_id:
        module, _, name = env_id.partition("/")
        name = re.sub(r"-v(\d+)$", r"_v\1", name)
    else:
        module, _, name = env_id.rpartition(".")
    family = module.removeprefix("pettingzoo.") if module != "pettingzoo" else ""
    if family == "mpe":
        raise ConfigError(
            f"env.id {env_id}: the particle environments (MPE) left pettingzoo for the mpe2 package",
            f"use env.id mpe2:{name or 'simple_spread_v3'} and pip install 'rlkit[mpe]'",
        )
    if family not in _EXTRAS or not name:
        raise ConfigError(
            f"env.id {env_id}: not a PettingZoo environment rlkit knows",
            "write family:name, e.g. mpe2:simple_spread_v3, pettingzoo.sisl:pursuit_v5, "
            "pettingzoo.butterfly:knights_archers_zombies_v11, pettingzoo.classic:connect_four_v3",
        )
    return family, name


def _missing(env_id: str, family: str, err: ImportError) -> ConfigError:
    module = (err.name or "").split(".")[0] or str(err)
    extra, provides = _EXTRAS[family]
    if module in provides:
        return ConfigError(
            f"env.id {env_id}: the {family} environments need the package {_PIP_NAMES.get(module, module)}, "
            "which is not installed",
            f"pip install 'rlkit[{extra}]'",
        )
    return ConfigError(
        f"env.id {env_id}: this environment needs the package {_PIP_NAMES.get(module, module)}, "
        "which rlkit's extras do not install",
        f"pip install {_PIP_NAMES.get(module, module)}",
    )


def _family_names(env_id: str, family: str) -> dict[str, Api]:
    """Every versioned environment name the installed family offers, with its API."""
    if family == "mpe2":
        try:
            with _quiet():
                package = importlib.import_module("mpe2")
        except ImportError as err:
            raise _missing(env_id, family, err) from None
        # Every mpe2 scenario is an AEC env with a parallel wrapper.
        return {m.name: "parallel" for m in pkgutil.iter_modules(package.__path__) if _ENV_NAME.fullmatch(m.name)}
    import pettingzoo

    names: dict[str, Api] = {}
    for registry_id, spec in pettingzoo.aec_registry.items():
        if spec.namespace == family:
            name = f"{spec.name}_v{spec.version}"
            names[name] = "parallel" if registry_id in pettingzoo.parallel_registry else "aec"
    return names


def _unknown(env_id: str, family: str, name: str, names: Mapping[str, Api]) -> ConfigError:
    base = name.rsplit("_v", 1)[0]
    if base in _GONE:
        return ConfigError(f"env.id {env_id}: {_GONE[base]}", "choose another environment")
    module = "mpe2" if family == "mpe2" else f"pettingzoo.{family}"
    same = sorted(n for n in names if n.rsplit("_v", 1)[0] == base)
    if same:
        return ConfigError(
            f"env.id {env_id}: the installed {module} has {', '.join(same)}, not {name}",
            f"use env.id {module}:{same[-1]}",
        )
    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.5)
    hint = (f"did you mean {', '.join(f'{module}:{c}' for c in close)}?" if close
            else f"{module} has {', '.join(sorted(names))}")
    return ConfigError(f"env.id {env_id}: {module} has no environment {name!r}", hint)


def resolve(env_id: str) -> PettingZooRef:
    """The environment ``env_id`` names; raises ConfigError (one line) for what cannot be built here."""
    family, name = _split(env_id)
    names = _family_names(env_id, family)
    if name not in names:
        raise _unknown(env_id, family, name, names)
    return PettingZooRef(env_id, family, name, names[name])


def make(ref: PettingZooRef, kwargs: Mapping[str, Any] | None = None) -> Any:
    """A new environment: a ``ParallelEnv`` when ``ref.api`` is parallel, else an ``AECEnv``."""
    kwargs = dict(kwargs or {})
    try:
        with _quiet():
            if ref.family == "mpe2":
                module = importlib.import_module(f"mpe2.{ref.name}")
                if ref.api == "parallel":
                    # Without pettingzoo's checking wrappers (call order, actions in bounds: rlkit's
                    # policies only make in-bounds actions), whose attribute lookups cost a quarter
                    # of each step: 3,270 -> 4,210 steps/s of simple_spread, same dynamics; and
                    # without aec_to_parallel's discarded observations (cycle_parallel).
                    from rlkit.train.cycle_parallel import CycleParallel

                    return CycleParallel(module.raw_env(**kwargs))
                return module.env(**kwargs)
            import pettingzoo
            from pettingzoo.env_registry.exceptions import FailedToImport

            base, version = ref.name.rsplit("_v", 1)
            try:
                return pettingzoo.make(ref.api, f"{ref.family}/{base}-v{version}", **kwargs)
            except FailedToImport as err:
                cause = err.__cause__
                raise cause if isinstance(cause, ImportError) else err
    except ImportError as err:
        raise _missing(ref.env_id, ref.family, err) from None
    except TypeError as err:
        raise ConfigError(f"env.kwargs for {ref.env_id}: {err}") from None
    except (ValueError, AssertionError) as err:
        raise ConfigError(f"env.kwargs for {ref.env_id}: {err}") from None


# --- spaces and agent types -------------------------------------------------------------------------


def group_by_type(agents: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Agents grouped by type, types and agents in the environment's order."""
    from rlkit.train.agents import agent_type

    groups: dict[str, list[str]] = {}
    for agent in agents:
        groups.setdefault(agent_type(agent), []).append(agent)
    return {kind: tuple(members) for kind, members in groups.items()}


def policy_observation(space: spaces.Space) -> tuple[spaces.Box, spaces.Box | None]:
    """The part of an observation space a policy reads, and the action-mask space if the env has one.

    Classic games observe ``{"observation": Box, "action_mask": Box}``: the
    policy reads the first; the mask restricts its choices.
    """
    if isinstance(space, spaces.Dict) and "observation" in space.spaces and "action_mask" in space.spaces:
        obs, mask = space["observation"], space["action_mask"]
        if isinstance(obs, spaces.Box) and isinstance(mask, spaces.Box):
            return obs, mask
    if isinstance(space, spaces.Box):
        return space, None
    raise ConfigError(
        f"observation space {space} is not supported",
        "rlkit policies read Box observations (or a dict of observation and action_mask)",
    )


def _is_image(space: spaces.Box) -> bool:
    return len(space.shape) == 3 and space.dtype == np.uint8


def space_label(space: spaces.Space) -> str:
    if isinstance(space, spaces.Box):
        return f"Box{tuple(space.shape)}"
    if isinstance(space, spaces.Discrete):
        return f"Discrete({space.n})"
    if isinstance(space, spaces.Dict):
        return "Dict(" + ", ".join(f"{k}: {space_label(v)}" for k, v in space.spaces.items()) + ")"
    return str(space)


@dataclass(frozen=True)
class MultiAgentSpec:
    """What the engine needs to know about a PettingZoo environment before any actor starts."""

    ref: PettingZooRef
    agents: tuple[str, ...]
    """``possible_agents``, in the environment's order."""
    spaces: dict[str, tuple[spaces.Space, spaces.Space]]
    state_shape: tuple[int, ...] | None
    """The shape of ``state()`` where the environment offers one."""

    @property
    def types(self) -> dict[str, tuple[str, ...]]:
        return group_by_type(self.agents)

    @property
    def state_dim(self) -> int:
        """The width of the global state: ``state()``, else every agent's flat observation side by side."""
        if self.state_shape is not None:
            return int(np.prod(self.state_shape))
        return sum(int(np.prod(policy_observation(self.spaces[a][0])[0].shape)) for a in self.agents)


def _state_shape(env: Any) -> tuple[int, ...] | None:
    space = getattr(env, "state_space", None)
    if not isinstance(space, spaces.Box):
        return None
    try:
        with _quiet():
            env.state()
    except (NotImplementedError, AttributeError):
        return None
    return tuple(space.shape)


def env_factory(ref: PettingZooRef, kwargs: Mapping[str, Any] | None = None) -> Callable[[], Any]:
    """A picklable factory of new copies (what a rollout actor receives)."""
    return functools.partial(make, ref, dict(kwargs or {}))


def describe(ref: PettingZooRef, env: Any) -> MultiAgentSpec:
    """The spec of a built environment; refuses (ConfigError) what rlkit cannot train."""
    with _quiet():
        env.reset(seed=0)
    agents = tuple(env.possible_agents)
    agent_spaces = {a: (env.observation_space(a), env.action_space(a)) for a in agents}
    for agent, (obs_space, act_space) in agent_spaces.items():
        try:
            obs, _ = policy_observation(obs_space)
        except ConfigError as err:
            raise ConfigError(f"env.id {ref.env_id}: agent {agent}: {err.message}", err.hint) from None
        if _is_image(obs):
            raise ConfigError(
                f"env.id {ref.env_id}: agent {agent} observes images {space_label(obs)}, "
                "and rlkit's cnn encoder takes gymnasium environments only so far",
                "choose an environment with vector observations (knights_archers_zombies: obs_method vector)",
            )
        if not (isinstance(act_space, spaces.Discrete)
                or (isinstance(act_space, spaces.Box) and len(act_space.shape) == 1)):
            raise ConfigError(
                f"env.id {ref.env_id}: agent {agent}: action space {space_label(act_space)} is not supported",
                "rlkit supports Discrete and 1-D Box action spaces",
            )
    return MultiAgentSpec(ref, agents, agent_spaces, _state_shape(env))


def probe(env_id: str, kwargs: Mapping[str, Any] | None = None) -> MultiAgentSpec:
    """Resolve ``env_id`` and build one copy to learn its agents and spaces."""
    ref = resolve(env_id)
    env = make(ref, kwargs)
    try:
        return describe(ref, env)
    finally:
        env.close()
