"""PPO's loss on one minibatch (CleanRL's ppo.py, detail by detail)."""

from __future__ import annotations

import torch

from rlkit.config import PPOConfig
from rlkit.train.algos.clipped import clipped_surrogate, policy_ratio
from rlkit.train.torch_model import ActorCritic


def ppo_loss(model: ActorCritic, mb: dict[str, torch.Tensor], cfg: PPOConfig,
             clip: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    new_logprob, entropy = model.log_prob_entropy(mb["obs"], mb["actions"])
    new_value = model.value(mb["obs"])
    ratio, approx_kl, clipfrac = policy_ratio(new_logprob, mb["logprobs"], clip)

    adv = mb["advantages"]
    if cfg.norm_adv:
        # Per-minibatch advantage normalisation.
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)

    # Clipped surrogate objective.
    pg_loss = clipped_surrogate(adv, ratio, clip)

    if cfg.clip_vloss:
        # Value clipping around the rollout-time value estimate.
        v_clipped = mb["values"] + (new_value - mb["values"]).clamp(-clip, clip)
        v_loss = 0.5 * torch.max((new_value - mb["returns"]) ** 2, (v_clipped - mb["returns"]) ** 2).mean()
    else:
        v_loss = 0.5 * ((new_value - mb["returns"]) ** 2).mean()

    # Entropy bonus keeps exploration alive.
    entropy_loss = entropy.mean()
    loss = pg_loss - cfg.ent_coef * entropy_loss + cfg.vf_coef * v_loss
    stats = {
        "losses/policy_loss": pg_loss.detach(),
        "losses/value_loss": v_loss.detach(),
        "losses/entropy": entropy_loss.detach(),
        "losses/approx_kl": approx_kl,
        "losses/clipfrac": clipfrac,
    }
    return loss, stats
