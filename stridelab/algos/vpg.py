"""Vanilla policy gradient: the baseline TRPO and PPO both improve on."""

from __future__ import annotations

from typing import Any

import torch

from stridelab.algos.base import Algorithm, register
from stridelab.algos.critic import AdamCritic
from stridelab.distributed import SINGLE, Comm, normalize_advantages
from stridelab.ops import gaussian_entropy, gaussian_kl, gaussian_log_prob
from stridelab.rollout import Batch

VPG_FIELDS = ("learning_rate", "anneal_lr", "vf_learning_rate", "vf_epochs", "vf_minibatches")


@register("vpg", preset="vpg", description="vanilla policy gradient (one Adam step per batch)", fields=VPG_FIELDS,
          factors={"core": "plain gradient", "optimizations": "off"})
class VPGAlgorithm(Algorithm):
    """REINFORCE with GAE advantages (Williams 1992; Schulman et al. 2016), as OpenAI Spinning
    Up's VPG: one Adam step on ``-mean(log pi(a|s) * A)`` over the whole batch, then the same
    critic fit as TRPO. No trust region, no clip, no second look at the batch: what TRPO's and
    PPO's constraints add is measured against this."""

    def __init__(self, agent: Any, cfg: Any, comm: Comm = SINGLE) -> None:
        super().__init__(agent, cfg, comm)
        self.optimizers["policy_optimizer"] = torch.optim.Adam(agent.policy.parameters(), lr=cfg.learning_rate,
                                                               eps=1e-5)
        self.critic = AdamCritic(agent, cfg, comm)
        self.optimizers["value_optimizer"] = self.critic.optimizer

    def set_progress(self, fraction_done: float) -> None:
        if self.cfg.anneal_lr:
            for group in self.optimizers["policy_optimizer"].param_groups:
                group["lr"] = self.cfg.learning_rate * max(0.0, 1.0 - fraction_done)
        self.critic.anneal(fraction_done)

    def update_policy(self, batch: Batch) -> dict[str, float]:
        with torch.no_grad():
            obs_n = self.agent.obs_rms.normalize(batch.obs)
        adv = normalize_advantages(batch.advantages, self.comm) if self.cfg.norm_adv else batch.advantages
        params = list(self.agent.policy.parameters())
        mean, std = self.agent.policy(obs_n)
        loss = -(gaussian_log_prob(mean, std, batch.actions) * adv).mean()
        self.gradient_step(self.optimizers["policy_optimizer"], loss, params)
        with torch.no_grad():
            new_mean, new_std = self.agent.policy(obs_n)
            kl = float(gaussian_kl(batch.mean_old, batch.std_old, new_mean, new_std).mean())
            entropy = float(gaussian_entropy(new_std).mean())
        self.critic.prepare(batch, obs_n)
        return {"losses/policy_loss": float(loss.detach()), "losses/entropy": entropy, "losses/approx_kl": kl}

    def update_value(self, batch: Batch) -> dict[str, float]:
        return self.critic.fit(batch)
