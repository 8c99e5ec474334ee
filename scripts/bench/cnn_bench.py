"""The CNN on a rollout actor: its forward pass in torch vs numpy, and rlkit's Breakout env steps/s.

    python scripts/bench/cnn_bench.py [--seconds 1.0] [--fragments 4]

Forward: rlkit's actor network (``CnnEncoder.network``) on batches of 8 and 32
random images, Nature-CNN at 84x84x4 and the small CNN at 10x10x4, one
thread (as Ray gives a 1-CPU actor), against a numpy version of the same
network (an im2col of strided windows and one matmul per layer), checked to
agree first. The numbers are rlkit.train.encoder's reason for torch.

Breakout: one RolloutWorker (no Ray) of configs/ppo_atari_breakout.yaml
(4 envs, 128-step fragments, env.preprocess atari) collecting ``--fragments``
fragments after a first one: env steps/s of the actor alone, policy included.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Callable

# One BLAS thread, as in a 1-CPU Ray actor (Ray sets OMP_NUM_THREADS=1 there): set before numpy loads it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from numpy.lib.stride_tricks import sliding_window_view  # noqa: E402

from rlkit.config import ModelConfig, load_train_config  # noqa: E402
from rlkit.train.encoder import CnnEncoder, Weights, make_encoder  # noqa: E402
from rlkit.train.envs import PolicySpec  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def numpy_forward(encoder: CnnEncoder, weights: Weights, x: np.ndarray) -> np.ndarray:
    x = x.reshape(len(x), *encoder.shape)
    for i, layer in enumerate(encoder.layers):
        w, b = weights[f"{2 * i + 1}.weight"], weights[f"{2 * i + 1}.bias"]
        windows = sliding_window_view(x, (layer.kernel, layer.kernel), axis=(1, 2))[:, ::layer.stride, ::layer.stride]
        x = np.maximum(np.tensordot(windows, w, axes=([3, 4, 5], [1, 2, 3])) + b, 0.0)
    x = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
    dense = 2 * len(encoder.layers) + 2
    x = np.maximum(x @ weights[f"{dense}.weight"].T + weights[f"{dense}.bias"], 0.0)
    return x @ weights[f"{dense + 2}.weight"].T + weights[f"{dense + 2}.bias"]


def per_call_ms(fn: Callable[[], object], seconds: float) -> float:
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return (time.perf_counter() - start) / n * 1e3


def forward(seconds: float) -> None:
    for shape in ((84, 84, 4), (10, 10, 4)):
        encoder = make_encoder(PolicySpec(shape, "discrete", 4), ModelConfig(encoder="cnn"))
        assert isinstance(encoder, CnnEncoder)
        net = encoder.network(4, 0.01)
        weights = {k: v.detach().numpy() for k, v in net.state_dict().items()}
        for batch in (8, 32):
            x = np.random.default_rng(0).random((batch, int(np.prod(shape))), dtype=np.float32)

            def run_torch() -> np.ndarray:
                with torch.inference_mode():
                    return net(torch.from_numpy(x)).numpy()

            np.testing.assert_allclose(numpy_forward(encoder, weights, x), run_torch(), atol=1e-4)
            t = per_call_ms(run_torch, seconds)
            n = per_call_ms(lambda: numpy_forward(encoder, weights, x), seconds)
            print(f"{'x'.join(map(str, shape))} batch {batch}: torch {t:.2f} ms, numpy {n:.2f} ms")


def breakout(fragments: int) -> None:
    from rlkit.train.agents import agent_mapping
    from rlkit.train.algos.base import make_algorithm
    from rlkit.train.envs import probe
    from rlkit.train.learner import Learner
    from rlkit.train.rollout import RolloutWorker

    cfg = load_train_config(REPO / "configs" / "ppo_atari_breakout.yaml", [])
    mapping = agent_mapping(probe(cfg.env, cfg.algo.name))
    learner = Learner(cfg, mapping, torch.device("cpu"))
    worker = RolloutWorker(cfg, mapping, make_algorithm(cfg.algo).collection, 0, cfg.seed)
    for pid, copy in learner.publish().policies.items():
        worker.policies[pid].load(copy.weights)
    worker.sample([None], -1)  # first fragment: builds the actor's torch networks
    steps, start = 0, time.perf_counter()
    for _ in range(fragments):
        steps += worker.sample([None], -1).env_steps
    elapsed = time.perf_counter() - start
    print(f"Breakout, one actor of {cfg.rollout.envs_per_worker} envs: {steps} env steps in {elapsed:.1f} s, "
          f"{steps / elapsed:.0f} env steps/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per forward-pass measurement")
    parser.add_argument("--fragments", type=int, default=4, help="Breakout fragments timed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    forward(args.seconds)
    breakout(args.fragments)


if __name__ == "__main__":
    main()
