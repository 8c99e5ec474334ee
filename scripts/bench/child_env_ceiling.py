"""One process stepping copies of a task's environment with uniform-random actions, nothing else.

    python child_env_ceiling.py CONFIG --adapter public|rlkit --seconds S [--copies N]

Prints one JSON line: {"steps": ..., "seconds": ..., "sps": ...}, env steps
(one step of one copy, all its agents acting) per second. marl_bench.py runs
as many of these at once as the config has rollout actors: no framework that
learns can step the environment faster on this machine than they do together.

    public  PettingZoo's own ``parallel_env(**kwargs)`` of the env's module (what RLlib steps)
    rlkit   what rlkit's rollout actors step (``pettingzoo_env.make``)
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

import numpy as np
from gymnasium.spaces import Discrete

from rlkit.config import load_train_config
from rlkit.train import pettingzoo_env


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--adapter", choices=("public", "rlkit"), required=True)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--copies", type=int, default=None, help="default: the config's envs_per_worker")
    args = p.parse_args()
    cfg = load_train_config(Path(args.config))
    ref = pettingzoo_env.resolve(cfg.env.id)
    kwargs = dict(cfg.env.kwargs)
    if args.adapter == "public":
        module = importlib.import_module(f"{ref.family}.{ref.name}")
        envs = [module.parallel_env(**kwargs) for _ in range(args.copies or cfg.rollout.envs_per_worker)]
    else:
        envs = [pettingzoo_env.make(ref, kwargs) for _ in range(args.copies or cfg.rollout.envs_per_worker)]
    rng = np.random.default_rng(0)
    for k, env in enumerate(envs):
        env.reset(seed=k)
    spaces = {a: envs[0].action_space(a) for a in envs[0].possible_agents}
    for space in spaces.values():
        space.seed(0)

    def action(agent: str):
        space = spaces[agent]
        return int(rng.integers(space.n)) if isinstance(space, Discrete) else space.sample()

    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        for env in envs:
            env.step({a: action(a) for a in env.agents})
            steps += 1
            if not env.agents:
                env.reset(seed=steps)
    seconds = time.perf_counter() - start
    print(json.dumps({"steps": steps, "seconds": seconds, "sps": steps / seconds}))


if __name__ == "__main__":
    main()
