"""GRPO: no critic; group-relative episode advantages; a KL penalty to a frozen reference policy."""

from __future__ import annotations

import copy

import torch

from rlkit.config import GRPOConfig
from rlkit.train.algos.advantages import group_advantages
from rlkit.train.algos.base import Algorithm, Batch, Collection, Tensors
from rlkit.train.algos.clipped import clipped_surrogate, policy_ratio
from rlkit.train.torch_model import ActorCritic


class GRPO(Algorithm):
    cfg: GRPOConfig

    @property
    def collection(self) -> Collection:
        return Collection(critic=False, group_size=self.cfg.group_size)

    def reference(self, model: ActorCritic) -> ActorCritic:
        return copy.deepcopy(model).requires_grad_(False)

    def rows(self, batch: Batch) -> Batch:
        b = batch
        # Every step of an episode carries that episode's group-relative advantage.
        ep_adv = group_advantages(b["episode_returns"], b["episode_groups"])
        rows = {"obs": b["obs"], "actions": b["actions"], "logprobs": b["logprobs"],
                "advantages": ep_adv[b["episode_index"]]}
        if "action_mask" in b:
            rows["action_mask"] = b["action_mask"]
        return rows

    def prepare(self, rows: Tensors, reference: ActorCritic | None) -> None:
        assert reference is not None
        with torch.no_grad():
            rows["ref_logprobs"], _ = reference.log_prob_entropy(rows["obs"], rows["actions"],
                                                                 rows.get("action_mask"))

    def loss(self, model: ActorCritic, mb: Tensors, clip: float) -> tuple[torch.Tensor, Tensors]:
        new_logprob, entropy = model.log_prob_entropy(mb["obs"], mb["actions"], mb.get("action_mask"))
        ratio, approx_kl, clipfrac = policy_ratio(new_logprob, mb["logprobs"], clip)

        # Episode-level advantages, already normalised within each group.
        adv = mb["advantages"]
        # PPO-style clipped ratio, averaged over steps.
        pg_loss = clipped_surrogate(adv, ratio, clip)

        # KL to the frozen reference policy, k3 estimator: exp(d) - d - 1 >= 0 with d = ref - new.
        d = mb["ref_logprobs"] - new_logprob
        kl_ref = (d.exp() - d - 1).mean()

        entropy_loss = entropy.mean()
        loss = pg_loss + self.cfg.kl_coef * kl_ref - self.cfg.ent_coef * entropy_loss
        stats = {
            "losses/policy_loss": pg_loss.detach(),
            "losses/kl_ref": kl_ref.detach(),
            "losses/entropy": entropy_loss.detach(),
            "losses/approx_kl": approx_kl,
            "losses/clipfrac": clipfrac,
        }
        return loss, stats

    def after_update(self, model: ActorCritic, reference: ActorCritic | None, policy_updates: int) -> None:
        interval = self.cfg.ref_update_interval
        if reference is not None and interval and policy_updates % interval == 0:
            # Refresh the frozen reference policy to the current one.
            reference.load_state_dict(model.state_dict())
