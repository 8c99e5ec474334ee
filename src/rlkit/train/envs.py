"""Environment factories and the space description the rest of the engine uses.

An ``EnvSpec`` names the environment's agents and each one's spaces; which
policy plays which agent is decided in ``rlkit.train.agents``. A gymnasium
id has one agent, ``SINGLE_AGENT``; multi-agent environments name theirs.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv

from rlkit.config import EnvConfig
from rlkit.errors import ConfigError

if TYPE_CHECKING:
    from rlkit.train.pettingzoo_env import MultiAgentSpec

SINGLE_AGENT = "agent_0"


@dataclass(frozen=True)
class PolicySpec:
    """What a policy needs to know about its observations and actions."""

    obs_shape: tuple[int, ...]
    action_kind: Literal["discrete", "continuous"]
    action_dim: int
    """Number of choices (discrete) or of action components (continuous)."""
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()

    @property
    def obs_dim(self) -> int:
        return int(np.prod(self.obs_shape))


@dataclass(frozen=True)
class EnvSpec:
    env_id: str
    agents: dict[str, PolicySpec]
    """Agent id -> that agent's spaces, in the environment's agent order."""
    max_episode_steps: int | None
    multi: MultiAgentSpec | None = None
    """A PettingZoo environment's full description (API, spaces, global state); None for gymnasium."""


def _policy_spec(env_id: str, obs_space: gym.Space, act_space: gym.Space, algo: str) -> PolicySpec:
    if not isinstance(obs_space, gym.spaces.Box):
        raise ConfigError(
            f"env.id {env_id}: observation space {obs_space} is not supported",
            "rlkit policies take Box observations; add a FlattenObservation wrapper env",
        )
    if isinstance(act_space, gym.spaces.Discrete):
        return PolicySpec(tuple(obs_space.shape), "discrete", int(act_space.n))
    if isinstance(act_space, gym.spaces.Box) and len(act_space.shape) == 1:
        return PolicySpec(
            tuple(obs_space.shape), "continuous", int(act_space.shape[0]),
            tuple(float(x) for x in act_space.low), tuple(float(x) for x in act_space.high),
        )
    raise ConfigError(
        f"algo {algo} does not fit env.id {env_id}: action space {act_space} is not supported",
        "rlkit supports Discrete and 1-D Box action spaces",
    )


def _register_minatar() -> None:
    import minatar.gym

    if "MinAtar/Breakout-v1" not in gym.registry:
        minatar.gym.register_envs()


def _register_ale() -> None:
    import ale_py

    gym.register_envs(ale_py)


# id prefix -> (what the family is called, the extra that installs it, the module, its registration):
# gymnasium 1.x loads no plugins, so these families' ids exist only once their package registered them.
_FAMILIES: dict[str, tuple[str, str, str, Callable[[], None]]] = {
    "ALE/": ("Atari", "atari", "ale-py", _register_ale),
    "MinAtar/": ("MinAtar", "minatar", "minatar", _register_minatar),
}


def _register_family(env_id: str) -> None:
    for prefix, (family, extra, package, register) in _FAMILIES.items():
        if env_id.startswith(prefix):
            try:
                register()
            except ImportError:
                raise ConfigError(f"env.id {env_id}: the {family} environments need the package {package}, "
                                  "which is not installed", f"pip install 'rlkit[{extra}]'") from None


def _channels_last(obs: np.ndarray) -> np.ndarray:
    return np.moveaxis(obs, 0, -1)


def _atari(env: gym.Env) -> gym.Env:
    """The DQN papers' pipeline (``env.preprocess: atari``); frames stacked channels-last, as the CNN reads them."""
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation, TransformObservation

    env = FrameStackObservation(AtariPreprocessing(env, scale_obs=True), 4)
    space = env.observation_space
    assert isinstance(space, gym.spaces.Box)
    stacked = gym.spaces.Box(0.0, 1.0, (*space.shape[1:], space.shape[0]), np.float32)
    return TransformObservation(env, _channels_last, stacked)


def _make(env_id: str, preprocess: str, kwargs: dict[str, Any]) -> gym.Env:
    _register_family(env_id)
    if preprocess == "atari":
        # AtariPreprocessing skips the frames itself: the emulator must return every one.
        return _atari(gym.make(env_id, **{**kwargs, "frameskip": 1}))
    return gym.make(env_id, **kwargs)


def _check_env_id(env_id: str) -> None:
    _register_family(env_id)
    if env_id in gym.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see gymnasium.registry for valid ids"
    raise ConfigError(f"env.id: unknown environment {env_id!r}", hint)


def make_env(cfg: EnvConfig) -> gym.Env:
    _check_env_id(cfg.id)
    if cfg.preprocess == "atari" and not cfg.id.startswith("ALE/"):
        raise ConfigError(f"env.preprocess atari: env.id {cfg.id} is not an Atari game",
                          "use an ALE/ id such as ALE/Breakout-v5, or env.preprocess none")
    try:
        return _make(cfg.id, cfg.preprocess, cfg.kwargs)
    except TypeError as err:
        raise ConfigError(f"env.kwargs for {cfg.id}: {err}") from None
    except gym.error.DependencyNotInstalled as err:
        raise ConfigError(f"env.id {cfg.id}: {err}") from None


def env_factory(cfg: EnvConfig) -> Callable[[], gym.Env]:
    """A picklable factory, so vector envs built from it pickle whole (checkpoints)."""
    return functools.partial(_make, cfg.id, cfg.preprocess, cfg.kwargs)


def make_vector_env(cfg: EnvConfig, num_envs: int) -> VectorEnv:
    """``num_envs`` copies of the environment behind one vector env, with NEXT_STEP autoreset.

    NEXT_STEP: the step after an episode ends returns the new episode's first
    observation and ignores its action; that is gymnasium's batched envs'
    own mode, so one rollout loop serves both implementations.
    """
    _register_family(cfg.id)
    spec = gym.spec(cfg.id)
    # A batched implementation has its own preprocessing (ale-py's): rlkit's pipeline wraps single envs.
    if cfg.vectorization == "auto" and spec.vector_entry_point is not None and cfg.preprocess == "none":
        try:
            vec = gym.make_vec(cfg.id, num_envs=num_envs, vectorization_mode="vector_entry_point", **cfg.kwargs)
        except TypeError:  # a keyword only the single-env class (or gym.make) takes
            pass
        else:
            if vec.metadata.get("autoreset_mode") == AutoresetMode.NEXT_STEP:
                return vec
            vec.close()
    return SyncVectorEnv([env_factory(cfg)] * num_envs, autoreset_mode=AutoresetMode.NEXT_STEP)


def probe(cfg: EnvConfig, algo: str) -> EnvSpec:
    """Build one env to learn its spaces; raises ConfigError for what rlkit cannot train."""
    from rlkit.train import pettingzoo_env

    if pettingzoo_env.is_pettingzoo_id(cfg.id):
        multi = pettingzoo_env.probe(cfg.id, cfg.kwargs)
        agents = {a: _policy_spec(cfg.id, pettingzoo_env.policy_observation(o)[0], act, algo)
                  for a, (o, act) in multi.spaces.items()}
        return EnvSpec(cfg.id, agents, None, multi)
    env = make_env(cfg)
    try:
        spec = _policy_spec(cfg.id, env.observation_space, env.action_space, algo)
        max_steps = env.spec.max_episode_steps if env.spec else None
    finally:
        env.close()
    return EnvSpec(cfg.id, {SINGLE_AGENT: spec}, max_steps)

