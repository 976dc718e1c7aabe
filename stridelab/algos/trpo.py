"""TRPO update: the policy by the :class:`~stridelab.optim.TRPO` optimizer, the critic by Adam."""

from __future__ import annotations

from collections.abc import Callable

import torch

from stridelab.config import TrainConfig
from stridelab.distributed import SINGLE, Comm, normalize_advantages
from stridelab.models import Agent
from stridelab.ops import explained_variance, gaussian_entropy, gaussian_kl, gaussian_log_prob, value_loss
from stridelab.optim import TRPO
from stridelab.rollout import Batch, beside_next_rollout


class TRPOAgent:
    """Trust-region policy optimization on the same rollout, GAE and networks as PPO.

    Per batch: one TRPO step on the importance-sampled surrogate ``-mean(ratio * A)`` under
    ``mean KL(old || new) <= max_kl``, then the value net is fitted separately with
    ``vf_epochs`` Adam epochs of ``vf_minibatches`` minibatches.

    With data-parallel processes (``comm``) the TRPO step averages the gradient, the
    Fisher-vector products and the line search over processes, and the critic's gradients are
    averaged, so every process keeps the same weights.
    """

    name = "trpo"

    def __init__(self, agent: Agent, cfg: TrainConfig, comm: Comm = SINGLE) -> None:
        self.agent, self.cfg, self.comm = agent, cfg, comm
        self.policy_optimizer = TRPO(agent.policy.parameters(), max_kl=cfg.max_kl, damping=cfg.damping,
                                     cg_iters=cfg.cg_iters, backtrack_ratio=cfg.backtrack_ratio,
                                     max_backtracks=cfg.max_backtracks,
                                     reduce=comm.mean if comm.active else None)
        self.value_optimizer = torch.optim.Adam(agent.value.parameters(), lr=cfg.vf_learning_rate, eps=1e-5,
                                                fused=True)

    def state_dict(self) -> dict:
        return {"value_optimizer": self.value_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.value_optimizer.load_state_dict(state["value_optimizer"])

    def set_progress(self, fraction_done: float) -> None:
        """TRPO's step size is set by the trust region; nothing is annealed."""

    @property
    def learning_rate(self) -> float:
        return float(self.value_optimizer.param_groups[0]["lr"])

    def update_policy(self, batch: Batch, obs_n: torch.Tensor) -> dict[str, float]:
        adv = normalize_advantages(batch.advantages, self.comm) if self.cfg.norm_adv else batch.advantages
        policy = self.agent.policy

        def closure() -> tuple[torch.Tensor, torch.Tensor]:
            mean, std = policy(obs_n)
            ratio = torch.exp(gaussian_log_prob(mean, std, batch.actions) - batch.logp_old)
            loss = -(ratio * adv).mean()
            kl = gaussian_kl(batch.mean_old, batch.std_old, mean, std).mean()
            return loss, kl

        fisher_closure = None
        n_fisher = int(len(batch) * self.cfg.fisher_fraction)
        if n_fisher < len(batch):
            # Fisher-vector products on a random subsample: the curvature needs far fewer samples
            # than the gradient (sb3-contrib's sub_sampling_factor; Schulman's modular_rl).
            idx = torch.randperm(len(batch), device="cpu")[: max(n_fisher, 1)].to(obs_n.device)
            f_obs, f_mean, f_std = obs_n[idx], batch.mean_old[idx], batch.std_old[idx]

            def fisher_closure() -> torch.Tensor:
                mean, std = policy(f_obs)
                return gaussian_kl(f_mean, f_std, mean, std).mean()

        info = self.policy_optimizer.step(closure, fisher_closure)
        with torch.no_grad():
            _, std = policy(obs_n)
            entropy = float(gaussian_entropy(std).mean())
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

    def update_value(self, batch: Batch, obs_n: torch.Tensor, perms: list[torch.Tensor]) -> dict[str, float]:
        """Adam on the value loss, one epoch per permutation in ``perms``."""
        cfg, value = self.cfg, self.agent.value
        mb_size = len(batch) // cfg.vf_minibatches
        total, n = torch.zeros((), device=obs_n.device), 0
        for perm in perms:
            for start in range(0, len(batch), mb_size):
                idx = perm[start : start + mb_size]
                loss = value_loss(value(obs_n[idx]), batch.returns[idx])
                self.value_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.comm.average_gradients(list(value.parameters()))
                torch.nn.utils.clip_grad_norm_(value.parameters(), cfg.max_grad_norm)
                self.value_optimizer.step()
                total += loss.detach()
                n += 1
        return {"losses/value_loss": float(total) / n}

    def update(self, batch: Batch, between: Callable[[], None] | None = None) -> dict[str, float]:
        """The TRPO step, then the critic's epochs; ``between`` is called after the policy's
        step (see :meth:`stridelab.algos.ppo.PPO.update`) and the critic then learns on fewer
        threads. Its minibatches are drawn before ``between`` runs, so the random stream is the
        same with or without it."""
        with torch.no_grad():
            obs_n = self.agent.obs_rms.normalize(batch.obs)
        metrics = self.update_policy(batch, obs_n)
        perms = [torch.randperm(len(batch), device="cpu").to(obs_n.device) for _ in range(self.cfg.vf_epochs)]
        with beside_next_rollout(between, obs_n.device):
            metrics.update(self.update_value(batch, obs_n, perms))
        with torch.no_grad():
            metrics["losses/explained_variance"] = float(explained_variance(batch.values_old, batch.returns))
        return metrics
