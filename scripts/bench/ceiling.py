"""The env-step ceiling: rlkit's default rollout layout stepping CartPole-v1 with no learning.

Two processes (rollout.num_workers) each step a gymnasium SyncVectorEnv of
8 envs (rollout.envs_per_worker) with SAME_STEP autoreset, as
rlkit.train.rollout.RolloutWorker does, taking random actions sampled in
numpy. The ceiling is the total env steps/s of both processes together.

    python scripts/bench/ceiling.py [--seconds 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time


def _stepper(env_id: str, n_envs: int, seconds: float, seed: int, start, out) -> None:
    import gymnasium as gym
    import numpy as np
    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    vec = SyncVectorEnv([lambda: gym.make(env_id)] * n_envs, autoreset_mode=AutoresetMode.SAME_STEP)
    vec.reset(seed=[seed + j for j in range(n_envs)])
    rng = np.random.default_rng(seed)
    n_actions = int(vec.single_action_space.n)
    for _ in range(200):  # warm-up
        vec.step(rng.integers(0, n_actions, size=n_envs))
    start.wait()
    steps, began = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - began) < seconds:
        vec.step(rng.integers(0, n_actions, size=n_envs))
        steps += n_envs
    out.put(steps / elapsed)


def ceiling_once(env_id: str = "CartPole-v1", procs: int = 2, n_envs: int = 8, seconds: float = 3.0) -> float:
    """Total env steps/s of ``procs`` processes stepping at once."""
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_stepper, args=(env_id, n_envs, seconds, 1000 * i, start, out))
               for i in range(procs)]
    for w in workers:
        w.start()
    rates = [out.get() for _ in workers]
    for w in workers:
        w.join()
    return sum(rates)


def ceiling(repeats: int = 3, **kwargs) -> dict[str, object]:
    runs = [ceiling_once(**kwargs) for _ in range(repeats)]
    return {"median_sps": statistics.median(runs), "runs_sps": runs, **kwargs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--envs", type=int, default=8)
    a = p.parse_args()
    result = ceiling(a.repeats, procs=a.procs, n_envs=a.envs, seconds=a.seconds)
    print(f"ceiling: {result['median_sps']:,.0f} env steps/s (median of "
          + ", ".join(f"{r:,.0f}" for r in result["runs_sps"]) + ")")


if __name__ == "__main__":
    main()
