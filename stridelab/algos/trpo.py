"""TRPO: the policy by the :class:`~stridelab.optim.TRPO` optimizer, the critic by Adam."""

from __future__ import annotations

from typing import Any

import torch

from stridelab.algos.base import Algorithm, register
from stridelab.distributed import SINGLE, Comm, normalize_advantages
from stridelab.algos.critic import AdamCritic
from stridelab.ops import gaussian_entropy, gaussian_kl, gaussian_log_prob, sums
from stridelab.optim import TRPO
from stridelab.rollout import Batch

TRPO_FIELDS = ("max_kl", "ent_coef", "damping", "cg_iters", "backtrack_ratio", "max_backtracks", "fisher_fraction",
               "vf_learning_rate", "vf_epochs", "vf_minibatches")


@register("trpo", description="trust region policy optimization", fields=TRPO_FIELDS,
          factors={"core": "trust region", "optimizations": "off"})
class TRPOAlgorithm(Algorithm):
    """Trust region policy optimization (Schulman et al. 2015) on the same rollout, GAE and
    networks as PPO.

    Per batch: one step of the TRPO optimizer on the importance-sampled surrogate
    ``-mean(ratio * A) - ent_coef * mean(entropy)`` (the entropy bonus as OpenAI Baselines'
    ``trpo_mpi``'s ``entcoeff``; 0 by default) under ``mean KL(old || new) <= max_kl``
    (:meth:`update_policy`), then
    the value net is fitted with ``vf_epochs`` Adam epochs of ``vf_minibatches`` minibatches
    (:meth:`update_value`).

    With data-parallel processes (``comm``) the TRPO step averages the gradient, the
    Fisher-vector products and the line search over processes, and the critic's gradients are
    averaged, so every process keeps the same weights.
    """

    def __init__(self, agent: Any, cfg: Any, comm: Comm = SINGLE) -> None:
        super().__init__(agent, cfg, comm)
        self.policy_optimizer = TRPO(agent.policy.parameters(), max_kl=cfg.max_kl, damping=cfg.damping,
                                     cg_iters=cfg.cg_iters, backtrack_ratio=cfg.backtrack_ratio,
                                     max_backtracks=cfg.max_backtracks, reduce=comm.mean if comm.active else None)
        self.critic = AdamCritic(agent, cfg, comm)
        # TRPO's own state is rebuilt every step; only the critic's Adam has moments to keep.
        self.optimizers["value_optimizer"] = self.critic.optimizer

    def set_progress(self, fraction_done: float) -> None:
        """The critic's learning rate annealed linearly to 0, with ``anneal_lr`` (the policy's
        step size is the trust region's)."""
        self.critic.anneal(fraction_done)

    def update_policy(self, batch: Batch) -> dict[str, float]:
        """One TRPO step. The critic's minibatches are drawn here too, so the random stream is
        the same whatever the runner does before :meth:`update_value`."""
        with torch.no_grad():
            obs_n = self.agent.obs_rms.normalize(batch.obs)
        info = self.policy_optimizer.step(*self._closures(batch, obs_n))
        with torch.no_grad():
            entropy = float(gaussian_entropy(self.agent.policy(obs_n)[1]).mean())
        self.critic.prepare(batch, obs_n)
        return {
            "losses/policy_loss": info["loss_after"],
            "losses/entropy": entropy,
            "losses/approx_kl": info["kl"],
            "trpo/kl": info["kl"],
            "trpo/backtracks": info["backtracks"],
            "trpo/accepted": info["accepted"],
            "trpo/cg_residual": info["cg_residual"],
            "trpo/step_norm": info["step_norm"],
            "trpo/expected_improvement": info["expected_improvement"],
            "trpo/actual_improvement": info["loss_before"] - info["loss_after"],
        }

    def _closures(self, batch: Batch, obs_n: torch.Tensor) -> tuple[Any, Any]:
        """The optimizer's closure (surrogate loss and KL on the batch) and the Fisher closure
        (the KL on a random ``fisher_fraction`` of it, or None for the whole batch)."""
        adv = normalize_advantages(batch.advantages, self.comm) if self.cfg.norm_adv else batch.advantages
        policy = self.agent.policy

        def closure() -> tuple[torch.Tensor, torch.Tensor]:
            mean, std = policy(obs_n)
            ratio = torch.exp(gaussian_log_prob(mean, std, batch.actions) - batch.logp_old)
            loss = -sums.mean(ratio * adv)  # fixed-order sums: the step repeats on any thread count
            if self.cfg.ent_coef:
                loss = loss - self.cfg.ent_coef * sums.mean(gaussian_entropy(std))
            return loss, sums.mean(gaussian_kl(batch.mean_old, batch.std_old, mean, std))

        n_fisher = int(len(batch) * self.cfg.fisher_fraction)
        if n_fisher >= len(batch):
            return closure, None
        # The curvature needs far fewer samples than the gradient (sb3-contrib's
        # sub_sampling_factor; Schulman's modular_rl).
        idx = torch.randperm(len(batch), device="cpu")[: max(n_fisher, 1)].to(obs_n.device)
        f_obs, f_mean, f_std = obs_n[idx], batch.mean_old[idx], batch.std_old[idx]

        def fisher_closure() -> torch.Tensor:
            mean, std = policy(f_obs)
            return sums.mean(gaussian_kl(f_mean, f_std, mean, std))

        return closure, fisher_closure

    def update_value(self, batch: Batch) -> dict[str, float]:
        return self.critic.fit(batch)


@register("npg", preset="trpo", description="natural policy gradient (TRPO's step, no line search)",
          fields=TRPO_FIELDS, factors={"core": "natural gradient", "optimizations": "off"})
class NPGAlgorithm(TRPOAlgorithm):
    """Natural policy gradient (Kakade 2001; the "truncated natural policy gradient" of Schulman
    et al.'s TRPO paper): TRPO's step, direction ``F^-1 g`` by conjugate gradient and length set by
    the quadratic KL estimate, taken whole, without the line search that checks the real KL and
    the surrogate's improvement. What the line search adds is TRPO's minus NPG's."""

    def __init__(self, agent: Any, cfg: Any, comm: Comm = SINGLE) -> None:
        super().__init__(agent, cfg, comm)
        self.policy_optimizer.param_groups[0]["line_search"] = False
