"""The torch actor-critic trained by the learner (CleanRL's layout)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from rlkit.config import ModelConfig
from rlkit.train.encoder import CnnEncoder, make_encoder
from rlkit.train.envs import PolicySpec

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def layer_init(layer: nn.Linear | nn.Conv2d, std: float = float(np.sqrt(2)), bias: float = 0.0) -> nn.Linear:
    # Orthogonal initialisation, sqrt(2) gain for hidden layers.
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


def mlp(in_dim: int, hidden: list[int], out_dim: int, activation: str, out_std: float) -> nn.Sequential:
    act = nn.Tanh if activation == "tanh" else nn.ReLU
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [layer_init(nn.Linear(in_dim, size)), act()]
        in_dim = size
    layers.append(layer_init(nn.Linear(in_dim, out_dim), std=out_std))
    return nn.Sequential(*layers)


class _ChannelsFirst(nn.Module):
    """Flat (height x width x channels) rows -> the (batch, channels, height, width) Conv2d takes."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(len(x), *self.shape).permute(0, 3, 1, 2)


def conv_net(encoder: CnnEncoder, out_dim: int, out_std: float) -> nn.Sequential:
    """``encoder``'s network, in the layout ``CnnEncoder.forward`` reads."""
    layers: list[nn.Module] = [_ChannelsFirst(encoder.shape)]
    channels = encoder.shape[2]
    for conv in encoder.layers:
        layers += [layer_init(nn.Conv2d(channels, conv.channels, conv.kernel, conv.stride)), nn.ReLU()]
        channels = conv.channels
    h, w = encoder.out_sides()
    layers += [nn.Flatten(), layer_init(nn.Linear(channels * h * w, encoder.features)), nn.ReLU(),
               layer_init(nn.Linear(encoder.features, out_dim), std=out_std)]
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    def __init__(self, spec: PolicySpec, model: ModelConfig, critic: bool) -> None:
        super().__init__()
        self.spec = spec
        # Small final-layer gain keeps the initial policy close to uniform.
        encoder = make_encoder(spec, model)
        # Actor and critic have a network each, the CNN's conv layers too (CleanRL's Atari PPO
        # shares them): the numpy mirror and the checkpoint's tensors stay one per key.
        self.actor = encoder.network(spec.action_dim, 0.01)
        self.critic = encoder.network(1, 1.0) if critic else None
        if spec.action_kind == "continuous":
            # State-independent log standard deviation, as in CleanRL's continuous PPO.
            self.actor_logstd = nn.Parameter(torch.zeros(spec.action_dim))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        assert self.critic is not None
        return self.critic(obs).squeeze(-1)

    def log_prob_entropy(self, obs: torch.Tensor, actions: torch.Tensor,
                         mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities of ``actions`` and the policy's entropy; with a
        ``mask`` (discrete) both are over the legal actions only."""
        # Written out rather than through torch.distributions: at rollout-sized
        # batches the learner is bound by op count, and this halves it.
        out = self.actor(obs)
        if self.spec.action_kind == "discrete":
            if mask is not None:
                out = out.masked_fill(~mask, -math.inf)
            logp_all = out.log_softmax(-1)
            logp = logp_all.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
            # Illegal actions have p = 0 and log p = -inf: their 0 * -inf terms are left out.
            finite = logp_all if mask is None else logp_all.masked_fill(~mask, 0.0)
            entropy = -(logp_all.exp() * finite).sum(-1)
            return logp, entropy
        log_std = self.actor_logstd
        z = (actions - out) * torch.exp(-log_std)
        logp = (-0.5 * z.pow(2) - log_std - _HALF_LOG_2PI).sum(-1)
        entropy = (0.5 + _HALF_LOG_2PI + log_std).sum().expand(len(obs))
        return logp, entropy

    def numpy_weights(self) -> dict[str, np.ndarray]:
        """Weights for ``NumpyPolicy``: one dict, published once per version."""
        return {k: v.detach().to("cpu", torch.float32).numpy().copy() for k, v in self.state_dict().items()}


class CentralCritic(nn.Module):
    """mappo's one value function of the global state (and the agent's one-hot index)."""

    def __init__(self, in_dim: int, model: ModelConfig) -> None:
        super().__init__()
        # Named as ActorCritic's critic, so NumpyPolicy.value reads its weights as they are.
        self.critic = mlp(in_dim, model.hidden_sizes, 1, model.activation, 1.0)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x).squeeze(-1)

    def numpy_weights(self) -> dict[str, np.ndarray]:
        return {k: v.detach().to("cpu", torch.float32).numpy().copy() for k, v in self.state_dict().items()}
