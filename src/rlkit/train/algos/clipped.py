"""The importance ratio and clipped surrogate that PPO and GRPO share."""

from __future__ import annotations

import torch


def policy_ratio(new_logprob: torch.Tensor, old_logprob: torch.Tensor,
                 clip_coef: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ratio, approx_kl, clipfrac) of the current policy against the rollout policy."""
    logratio = new_logprob - old_logprob
    ratio = logratio.exp()
    with torch.no_grad():
        # The low-variance KL estimator (ratio - 1) - log ratio.
        approx_kl = ((ratio - 1) - logratio).mean()
        clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean()
    return ratio, approx_kl, clipfrac


def clipped_surrogate(adv: torch.Tensor, ratio: torch.Tensor, clip_coef: float) -> torch.Tensor:
    """PPO's pessimistic objective, as a loss: max of the unclipped and clipped terms."""
    return torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip_coef, 1 + clip_coef)).mean()
