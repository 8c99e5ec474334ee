"""Evaluate a checkpoint's deterministic policy, without Ray."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from rlkit.config import TrainConfig
from rlkit.errors import BadInputError
from rlkit.train import checkpoint as ckpt
from rlkit.train.agents import agent_mapping
from rlkit.train.envs import SINGLE_AGENT, make_env, probe
from rlkit.train.normalize import RunningMeanStd
from rlkit.train.policies import NumpyPolicy


@dataclass
class EvalResult:
    checkpoint: str
    episodes: int
    mean_return: float
    std_return: float
    mean_length: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _load(target: Path) -> ckpt.Loaded:
    if target.is_dir():
        return ckpt.load_latest(target)
    if target.is_file():
        return ckpt.load_checkpoint(target)
    raise BadInputError(f"{target}: no such run directory or checkpoint file")


def evaluate(target: Path, episodes: int = 10, seed: int = 10_000,
             notify: Callable[[str], None] = ckpt.to_stderr) -> EvalResult:
    """Mean and std return of the greedy (argmax or mean-action) policy over ``episodes``.

    ``notify`` gets one line per damaged checkpoint skipped for an older one.
    """
    if episodes < 1:
        raise BadInputError(f"--episodes {episodes}: must be at least 1")
    loaded = _load(target)
    for note in loaded.notes:
        notify(note)
    path, state = loaded.path, loaded.state
    config = TrainConfig.model_validate(state["config"])
    mapping = agent_mapping(probe(config.env, config.algo.name))
    pid = mapping.policy_of[SINGLE_AGENT]
    saved = state["trainer"]["learner"]["policies"][pid]
    policy = NumpyPolicy(mapping.policies[pid], config.model, critic=False)
    policy.load({k: v.numpy() for k, v in saved["model"].items()})
    obs_rms = RunningMeanStd.from_state_dict(saved["obs_rms"]) if saved["obs_rms"] else None
    env = make_env(config.env)
    returns, lengths = [], []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        total, steps, done = 0.0, 0, False
        while not done:
            x = np.asarray(obs, np.float32).reshape(1, -1)
            if obs_rms is not None:
                x = obs_rms.normalize(x, config.env.clip_obs)
            action = policy.env_actions(policy.act_deterministic(x))[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            steps += 1
            done = terminated or truncated
        returns.append(total)
        lengths.append(steps)
    env.close()
    return EvalResult(str(path), episodes, float(np.mean(returns)), float(np.std(returns)), float(np.mean(lengths)))
