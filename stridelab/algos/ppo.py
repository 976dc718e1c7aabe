"""PPO update: clipped surrogate, value loss, entropy bonus, minibatch epochs."""

from __future__ import annotations

import torch

from stridelab.config import TrainConfig
from stridelab.models import Agent
from stridelab.ops import clipped_surrogate_loss, explained_variance, gaussian_entropy, gaussian_log_prob, value_loss
from stridelab.rollout import Batch


def normalize_advantages(adv: torch.Tensor) -> torch.Tensor:
    return (adv - adv.mean()) / (adv.std() + 1e-8)


class PPO:
    """Proximal policy optimization (Schulman et al. 2017) on an :class:`Agent`.

    One Adam over policy and value parameters. The gradient norm is clipped per network: the
    value loss's gradient is often orders of magnitude larger than the policy's, and one global
    clip would then shrink the policy's step along with it.
    """

    name = "ppo"

    def __init__(self, agent: Agent, cfg: TrainConfig) -> None:
        self.agent, self.cfg = agent, cfg
        self.optimizer = torch.optim.Adam(
            list(agent.policy.parameters()) + list(agent.value.parameters()), lr=cfg.learning_rate, eps=1e-5
        )

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])

    def set_progress(self, fraction_done: float) -> None:
        """Linear learning-rate annealing to 0, when enabled."""
        if self.cfg.anneal_lr:
            for group in self.optimizer.param_groups:
                group["lr"] = self.cfg.learning_rate * max(0.0, 1.0 - fraction_done)

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def update(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, float]:
        cfg, agent = self.cfg, self.agent
        mb_size = len(batch) // cfg.num_minibatches
        sums: dict[str, torch.Tensor] = {}
        n_updates = 0
        stop = False
        for _epoch in range(cfg.update_epochs):
            perm = torch.randperm(len(batch), generator=generator, device="cpu").to(batch.obs.device)
            for start in range(0, len(batch), mb_size):
                mb = batch.index(perm[start : start + mb_size])
                adv = normalize_advantages(mb.advantages) if cfg.norm_adv else mb.advantages
                mean, std = agent.dist_params(mb.obs)
                logp = gaussian_log_prob(mean, std, mb.actions)
                pg_loss, m = clipped_surrogate_loss(logp, mb.logp_old, adv, cfg.clip_coef)
                entropy = gaussian_entropy(std).mean()
                v_loss = value_loss(agent.get_value(mb.obs), mb.returns)
                loss = pg_loss - cfg.ent_coef * entropy + cfg.vf_coef * v_loss

                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(agent.policy.parameters(), cfg.max_grad_norm)
                torch.nn.utils.clip_grad_norm_(agent.value.parameters(), cfg.max_grad_norm)
                self.optimizer.step()

                for k, v in {"policy_loss": pg_loss, "value_loss": v_loss, "entropy": entropy, **m}.items():
                    sums[k] = sums.get(k, 0.0) + v.detach()
                n_updates += 1
                if cfg.target_kl is not None and m["approx_kl"].item() > cfg.target_kl:
                    stop = True
                    break
            if stop:
                break
        metrics = {f"losses/{k}": float(v) / n_updates for k, v in sums.items()}
        with torch.no_grad():
            metrics["losses/explained_variance"] = float(explained_variance(batch.values_old, batch.returns))
        metrics["losses/num_minibatch_updates"] = float(n_updates)
        return metrics
