"""GRPO's loss on one minibatch: no critic, group-relative advantages."""

from __future__ import annotations

import torch

from rlkit.config import GRPOConfig
from rlkit.train.algos.clipped import clipped_surrogate, policy_ratio
from rlkit.train.torch_model import ActorCritic


def grpo_loss(model: ActorCritic, mb: dict[str, torch.Tensor], cfg: GRPOConfig,
              clip: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    new_logprob, entropy = model.log_prob_entropy(mb["obs"], mb["actions"])
    ratio, approx_kl, clipfrac = policy_ratio(new_logprob, mb["logprobs"], clip)

    # Episode-level advantages, already normalised within each group.
    adv = mb["advantages"]
    # PPO-style clipped ratio, averaged over steps.
    pg_loss = clipped_surrogate(adv, ratio, clip)

    # KL to the frozen reference policy, k3 estimator: exp(d) - d - 1 >= 0 with d = ref - new.
    d = mb["ref_logprobs"] - new_logprob
    kl_ref = (d.exp() - d - 1).mean()

    entropy_loss = entropy.mean()
    loss = pg_loss + cfg.kl_coef * kl_ref - cfg.ent_coef * entropy_loss
    stats = {
        "losses/policy_loss": pg_loss.detach(),
        "losses/kl_ref": kl_ref.detach(),
        "losses/entropy": entropy_loss.detach(),
        "losses/approx_kl": approx_kl,
        "losses/clipfrac": clipfrac,
    }
    return loss, stats
