"""Adam with global gradient-norm clipping over one flat parameter buffer.

torch.optim would do, but its first call imports torch._dynamo: 2.2 s of CPU
on a 2-core machine, paid while Ray starts its processes on the same cores
(measured; the first update of a default run came 8.8 s -> 7.5 s after the
process started, median of 4 interleaved runs each). Here the model's
parameters and gradients are views into two flat tensors, so a whole
optimizer step is a handful of tensor operations. The arithmetic is
torch.optim.Adam's (tests compare the two).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from rlkit.errors import BadInputError


class FlatAdam:
    def __init__(self, model: nn.Module, lr: float, eps: float = 1e-8,
                 betas: tuple[float, float] = (0.9, 0.999)) -> None:
        self.lr, self.eps, self.betas = lr, eps, betas
        params = [p for p in model.parameters() if p.requires_grad]
        with torch.no_grad():
            self.flat = torch.cat([p.reshape(-1) for p in params])
        self.grad = torch.zeros_like(self.flat)
        offset = 0
        for p in params:
            n = p.numel()
            # Autograd accumulates into an existing .grad in place, so the
            # gradients land in self.grad.
            p.data = self.flat[offset:offset + n].view_as(p)
            p.grad = self.grad[offset:offset + n].view_as(p)
            offset += n
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        self.steps = 0

    def zero_grad(self) -> None:
        self.grad.zero_()

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        """Scale the gradient so its global L2 norm is at most ``max_norm``; returns the norm before."""
        norm = self.grad.norm()
        self.grad.mul_((max_norm / (norm + 1e-6)).clamp(max=1.0))
        return norm

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        self.steps += 1
        self.exp_avg.lerp_(self.grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(self.grad, self.grad, value=1 - beta2)
        # Bias correction, folded into the step size and the denominator.
        bias1 = 1 - beta1 ** self.steps
        bias2_sqrt = math.sqrt(1 - beta2 ** self.steps)
        denom = (self.exp_avg_sq.sqrt() / bias2_sqrt).add_(self.eps)
        self.flat.addcdiv_(self.exp_avg, denom, value=-self.lr / bias1)

    def state_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "steps": self.steps,
                "exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "exp_avg" not in state:
            raise BadInputError("the checkpoint's optimizer state is torch.optim's, from an older rlkit",
                                "evaluate it with rlkit eval, or start a new run; it cannot be resumed")
        self.lr, self.steps = state["lr"], state["steps"]
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
