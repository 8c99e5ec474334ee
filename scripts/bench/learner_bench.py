"""Learner update throughput: samples/s through rlkit's ``Learner.update`` on a large synthetic PPO batch.

    python scripts/bench/learner_bench.py [--device cpu,cuda] [--batch 65536] [--hidden 64,64 | --big]
        [--repeats 5] [--threads N] [--json out.json]

The batch is made of synthetic ``Fragment`` objects laid out as
RolloutWorker.sample returns them for PPO on CartPole-v1 (arrays [T, N, ...]
per fragment); the config is configs/ppo_cartpole.yaml (10 epochs, 2
minibatches) with the model size chosen here. One update is all epochs and
minibatches over the batch, so samples/s = batch / update seconds. CUDA is
measured only where torch sees a device; the ratio is cuda / cpu.
No Ray is needed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
BIG = "512,512"


def fragments(n_frag: int, T: int, N: int, obs_dim: int, seed: int = 0) -> list:
    from rlkit.train.agents import DEFAULT_POLICY
    from rlkit.train.rollout import Fragment

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_frag):
        batch = {
            "obs": rng.standard_normal((T, N, obs_dim), dtype=np.float32),
            "actions": rng.integers(0, 2, size=(T, N), dtype=np.int64),
            "logprobs": np.full((T, N), np.log(0.5), np.float32),
            "values": rng.standard_normal((T, N), dtype=np.float32),
            "rewards": np.ones((T, N), np.float32),
            "dones": (rng.random((T, N)) < 0.01).astype(np.float32),  # episodes of ~100 steps
            "bootstrap": np.zeros((T, N), np.float32),
            "valid": np.ones((T, N), np.float32),
            "last_value": rng.standard_normal(N, dtype=np.float32),
        }
        out.append(Fragment(i, 0, T * N, {DEFAULT_POLICY: batch}))
    return out


def bench_device(device: str, args: argparse.Namespace) -> dict[str, object]:
    import torch

    from rlkit.config import load_train_config
    from rlkit.train.agents import agent_mapping
    from rlkit.train.envs import SINGLE_AGENT, probe
    from rlkit.train.learner import Learner

    hidden = args.hidden.split(",")
    config = load_train_config(REPO / "configs" / "ppo_cartpole.yaml",
                               [f"model.hidden_sizes=[{','.join(hidden)}]", f"device={device}"])
    spec = probe(config.env, config.algo.name)
    learner = Learner(config, agent_mapping(spec), torch.device(device))
    T = args.fragment_length
    n_frag = max(1, args.batch // (T * args.envs))
    frags = fragments(n_frag, T, args.envs, spec.agents[SINGLE_AGENT].obs_dim)
    batch = n_frag * T * args.envs

    def timed() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        learner.update(frags, 0.0)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - began

    for _ in range(args.warmup):
        timed()
    times = [timed() for _ in range(args.repeats)]
    median = statistics.median(times)
    return {"device": device, "batch": batch, "hidden": [int(h) for h in hidden],
            "epochs": config.algo.update_epochs, "minibatches": config.algo.num_minibatches,
            "torch_threads": torch.get_num_threads(), "update_s": times, "median_update_s": median,
            "samples_per_s": batch / median}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu,cuda", help="comma-separated: cpu, cuda")
    p.add_argument("--batch", type=int, default=65536, help="samples per update")
    p.add_argument("--fragment-length", type=int, default=256)
    p.add_argument("--envs", type=int, default=32, help="envs per fragment")
    p.add_argument("--hidden", default="64,64", help="hidden layer sizes")
    p.add_argument("--big", action="store_true", help=f"a bigger MLP: --hidden {BIG}")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.big:
        args.hidden = BIG

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for device in [d.strip() for d in args.device.split(",") if d.strip()]:
        if device == "cuda" and not torch.cuda.is_available():
            print("cuda: skipped (torch sees no CUDA device)")
            continue
        r = bench_device(device, args)
        results[device] = r
        print(f"{device}: batch {r['batch']:,}, MLP {args.hidden}, {r['epochs']} epochs x {r['minibatches']} "
              f"minibatches: {r['median_update_s']:.3f} s/update (median of {args.repeats}), "
              f"{r['samples_per_s']:,.0f} samples/s")
    if "cpu" in results and "cuda" in results:
        ratio = results["cuda"]["samples_per_s"] / results["cpu"]["samples_per_s"]
        results["cuda_over_cpu"] = ratio
        print(f"cuda / cpu: x{ratio:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
