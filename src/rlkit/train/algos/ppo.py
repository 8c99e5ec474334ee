"""PPO (CleanRL's ppo.py, detail by detail): GAE advantages, clipped surrogate, value loss."""

from __future__ import annotations

import numpy as np
import torch

from rlkit.config import PPOConfig
from rlkit.train.algos.advantages import gae
from rlkit.train.algos.base import Algorithm, Batch, Collection, Tensors
from rlkit.train.algos.clipped import clipped_surrogate, policy_ratio
from rlkit.train.torch_model import ActorCritic


class PPO(Algorithm):
    cfg: PPOConfig

    @property
    def collection(self) -> Collection:
        return Collection(critic=True, group_size=None)

    def rows(self, batch: Batch) -> Batch:
        b = batch
        adv, ret = gae(b["rewards"], b["values"], b["dones"], b["bootstrap"], b["last_value"],
                       self.cfg.gamma, self.cfg.gae_lambda)
        time_major = {
            "obs": b["obs"], "actions": b["actions"], "logprobs": b["logprobs"],
            "values": b["values"], "advantages": adv, "returns": ret,
        }
        for optional in ("action_mask", "critic_obs"):
            if optional in b:
                time_major[optional] = b[optional]
        # Flatten [T, N, ...] to [T*N, ...] rows, keeping real transitions only
        # (autoreset rows carry no experience).
        keep = b["valid"].reshape(-1) > 0
        return {k: v.reshape(-1, *v.shape[2:])[keep] for k, v in time_major.items()}

    def loss(self, model: ActorCritic, mb: Tensors, clip: float) -> tuple[torch.Tensor, Tensors]:
        cfg = self.cfg
        new_logprob, entropy = model.log_prob_entropy(mb["obs"], mb["actions"], mb.get("action_mask"))
        ratio, approx_kl, clipfrac = policy_ratio(new_logprob, mb["logprobs"], clip)

        adv = mb["advantages"]
        if cfg.norm_adv:
            # Per-minibatch advantage normalisation.
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)

        # Clipped surrogate objective.
        pg_loss = clipped_surrogate(adv, ratio, clip)

        # Entropy bonus keeps exploration alive.
        entropy_loss = entropy.mean()
        loss = pg_loss - cfg.ent_coef * entropy_loss
        stats = {
            "losses/policy_loss": pg_loss.detach(),
            "losses/entropy": entropy_loss.detach(),
            "losses/approx_kl": approx_kl,
            "losses/clipfrac": clipfrac,
        }
        if model.critic is not None:
            v_loss = self.value_loss(model.value(mb["obs"]), mb, clip)
            loss = loss + cfg.vf_coef * v_loss
            stats["losses/value_loss"] = v_loss.detach()
        return loss, stats

    def value_loss(self, new_value: torch.Tensor, mb: Tensors, clip: float) -> torch.Tensor:
        """The value loss alone: a policy's own critic adds it to the loss, a central critic trains on it."""
        if self.cfg.clip_vloss:
            # Value clipping around the rollout-time value estimate.
            v_clipped = mb["values"] + (new_value - mb["values"]).clamp(-clip, clip)
            return 0.5 * torch.max((new_value - mb["returns"]) ** 2, (v_clipped - mb["returns"]) ** 2).mean()
        return 0.5 * ((new_value - mb["returns"]) ** 2).mean()

    def batch_metrics(self, rows: Batch) -> dict[str, float]:
        values, returns = rows["values"], rows["returns"]
        var = returns.var()
        return {"losses/explained_variance": float("nan") if var == 0 else float(1 - (returns - values).var() / var)}
