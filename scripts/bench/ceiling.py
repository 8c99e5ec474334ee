"""The env-step ceiling: rlkit's default rollout layout stepping CartPole-v1 with no learning.

Each process (rollout.num_workers of them) steps the vector env that
rlkit.train.rollout.RolloutWorker builds (rlkit.train.envs.make_vector_env:
gymnasium's batched CartPole, NEXT_STEP autoreset) with
rollout.envs_per_worker copies, taking random actions sampled in numpy. The
ceiling is the total env steps/s of all processes together.

    python scripts/bench/ceiling.py [--seconds 3] [--repeats 3] [--config configs/ppo_cartpole.yaml]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "ppo_cartpole.yaml"


def _stepper(env_id: str, n_envs: int, seconds: float, seed: int, start, out) -> None:
    import numpy as np

    from rlkit.config import EnvConfig
    from rlkit.train.envs import make_vector_env

    vec = make_vector_env(EnvConfig(id=env_id), n_envs)
    vec.reset(seed=seed)
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


def layout(config: str, overrides: list[str]) -> dict[str, object]:
    """The env id and rollout layout of an rlkit config: what the ceiling steps."""
    from rlkit.config import load_train_config

    cfg = load_train_config(Path(config), overrides)
    return {"env_id": cfg.env.id, "procs": cfg.rollout.num_workers, "n_envs": cfg.rollout.envs_per_worker}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--config", default=str(CONFIG), help="the rlkit config whose layout is stepped")
    a = p.parse_args()
    result = ceiling(a.repeats, seconds=a.seconds, **layout(a.config, []))
    print(f"ceiling: {result['median_sps']:,.0f} env steps/s (median of "
          + ", ".join(f"{r:,.0f}" for r in result["runs_sps"]) + ")")


if __name__ == "__main__":
    main()
