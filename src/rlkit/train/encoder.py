"""The network a policy puts on its observations (``model.encoder``), chosen once per policy.

An encoder builds the torch network the learner trains and runs the same
network's forward pass for rollout actors, from the same weight dict
(``ActorCritic.numpy_weights``). Observations travel flat everywhere
(batches, normalisers); the CNN reads them as (height, width, channels), the
layout of MinAtar, of rendered frames and of rlkit's Atari pipeline, and
permutes to torch's (channels, height, width) inside the network.

Rollout actors run the MLP in numpy and the CNN in torch (CPU, inference
mode, the one thread Ray gives a 1-CPU actor). Per forward pass, one thread,
two runs of ``scripts/bench/cnn_bench.py`` on a shared 2-core machine (numpy
as an im2col of strided windows and one matmul per layer):

  Nature-CNN 84x84x4, batch 8:   torch 4.9-6.9 ms,   numpy 8.9-10.2 ms
  Nature-CNN 84x84x4, batch 32:  torch 15.7-16.7 ms, numpy 34.6-40.5 ms
  small CNN 10x10x4, batch 8:    torch 0.47-0.48 ms, numpy 0.34-0.37 ms
  small CNN 10x10x4, batch 32:   torch 0.71-0.86 ms, numpy 0.79-0.89 ms

Torch is 1.5-2.4x faster at Atari size, where the forward pass is a large
part of an actor's step; at MinAtar size the two are within a tenth of a
millisecond, so the CNN has one implementation. Torch's import (about 220 MB,
two seconds) is paid only by the actors of CNN runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from rlkit.config import ModelConfig
from rlkit.errors import ConfigError
from rlkit.train.envs import PolicySpec

if TYPE_CHECKING:
    from torch import nn

Weights = dict[str, np.ndarray]


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"tanh": np.tanh, "relu": _relu}


class Encoder(Protocol):
    def network(self, out_dim: int, out_std: float) -> nn.Sequential:
        """The torch network from a flat observation to ``out_dim`` outputs."""

    def forward(self, weights: Weights, prefix: str, x: np.ndarray) -> np.ndarray:
        """``network``'s forward pass in numpy, reading its weights under ``prefix``."""


@dataclass(frozen=True)
class MlpEncoder:
    in_dim: int
    hidden_sizes: tuple[int, ...]
    activation: str

    def network(self, out_dim: int, out_std: float) -> nn.Sequential:
        from rlkit.train.torch_model import mlp

        return mlp(self.in_dim, list(self.hidden_sizes), out_dim, self.activation, out_std)

    def forward(self, weights: Weights, prefix: str, x: np.ndarray) -> np.ndarray:
        act = _ACTIVATIONS[self.activation]
        last = len(self.hidden_sizes)
        for i in range(last + 1):
            # nn.Sequential numbers activations too: Linear layers sit at 0, 2, 4...
            x = x @ weights[f"{prefix}.{2 * i}.weight"].T + weights[f"{prefix}.{2 * i}.bias"]
            if i < last:
                x = act(x)
        return x


@dataclass(frozen=True)
class Conv:
    channels: int
    kernel: int
    stride: int


NATURE = (Conv(32, 8, 4), Conv(64, 4, 2), Conv(64, 3, 1))
"""The DQN Nature paper's layers, for images of at least NATURE_MIN_SIDE pixels a side."""
NATURE_MIN_SIDE = 36
"""The smallest side the Nature layers leave a pixel of (36 -> 8 -> 3 -> 1)."""
SMALL = (Conv(16, 3, 1),)
"""The MinAtar paper's one 3x3 layer, for smaller images (MinAtar's are 10x10): an 8x8
stride-4 kernel would leave a 10x10 image one output pixel."""


@dataclass
class CnnEncoder:
    """Conv layers with ReLU, then one dense ReLU layer of ``features``, then the output layer.

    Sequential layout (what the weight keys number): 0 the channels-last view,
    then a (Conv2d, ReLU) pair per layer, Flatten, Linear, ReLU, Linear.
    """

    shape: tuple[int, int, int]
    """(height, width, channels)."""
    layers: tuple[Conv, ...]
    features: int
    _nets: dict[str, tuple[Weights, nn.Sequential]] = field(default_factory=dict, repr=False, compare=False)
    """Per weight prefix (actor, critic): the torch network and the weight dict it holds."""

    @classmethod
    def for_shape(cls, shape: tuple[int, int, int]) -> CnnEncoder:
        if min(shape[:2]) >= NATURE_MIN_SIDE:
            return cls(shape, NATURE, 512)
        return cls(shape, SMALL, 128)

    def out_sides(self) -> tuple[int, int]:
        h, w = self.shape[:2]
        for layer in self.layers:
            h, w = (h - layer.kernel) // layer.stride + 1, (w - layer.kernel) // layer.stride + 1
        return h, w

    def network(self, out_dim: int, out_std: float) -> nn.Sequential:
        from rlkit.train.torch_model import conv_net

        return conv_net(self, out_dim, out_std)

    def forward(self, weights: Weights, prefix: str, x: np.ndarray) -> np.ndarray:
        import torch

        net = self._loaded(weights, prefix)
        with torch.inference_mode():
            return net(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()

    def _loaded(self, weights: Weights, prefix: str) -> nn.Sequential:
        """``prefix``'s network holding ``weights``: built once, reloaded when the weight dict changes."""
        import torch

        held = self._nets.get(prefix)
        if held is not None and held[0] is weights:
            return held[1]
        net = held[1] if held is not None else self.network(len(weights[f"{prefix}.{self.output_index}.bias"]), 1.0)
        start = f"{prefix}."
        net.load_state_dict({k[len(start):]: torch.from_numpy(v) for k, v in weights.items() if k.startswith(start)})
        # The weight dict is held, so its identity is not reused while it is cached.
        self._nets[prefix] = (weights, net)
        return net

    @property
    def output_index(self) -> int:
        return 2 * len(self.layers) + 4


def make_encoder(spec: PolicySpec, model: ModelConfig) -> Encoder:
    """The encoder ``model.encoder`` names, for ``spec``'s observations; ConfigError if they do not fit."""
    if model.encoder == "mlp":
        return MlpEncoder(spec.obs_dim, tuple(model.hidden_sizes), model.activation)
    shape = spec.obs_shape
    if len(shape) != 3 or min(shape[:2]) < SMALL[0].kernel:
        raise ConfigError(
            f"model.encoder cnn: the observations have shape {shape}, not (height, width, channels) images "
            f"of at least {SMALL[0].kernel}x{SMALL[0].kernel}",
            "use model.encoder mlp for vector observations",
        )
    return CnnEncoder.for_shape((int(shape[0]), int(shape[1]), int(shape[2])))
