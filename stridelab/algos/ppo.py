"""PPO: clipped surrogate and entropy bonus for the policy, minibatch epochs, the value net alongside."""

from __future__ import annotations

from typing import Any

import torch

from stridelab.algos.base import Algorithm, register
from stridelab.distributed import SINGLE, Comm, normalize_advantages
from stridelab.ops import clipped_surrogate_loss, explained_variance, gaussian_entropy, gaussian_log_prob, value_loss
from stridelab.rollout import Batch

PPO_FIELDS = ("learning_rate", "anneal_lr", "update_epochs", "num_minibatches", "clip_coef", "ent_coef", "vf_coef",
              "target_kl")


@register("ppo", description="proximal policy optimization (clipped surrogate)", fields=PPO_FIELDS,
          factors={"core": "clip", "optimizations": "on"})
class PPOAlgorithm(Algorithm):
    """Proximal policy optimization (Schulman et al. 2017) on an
    :class:`~stridelab.models.ActorCritic`.

    One Adam over policy and value parameters. The gradient norm is clipped per network: the
    value loss's gradient is often orders of magnitude larger than the policy's, and one global
    clip would then shrink the policy's step along with it.

    The policy's minibatch steps come first (:meth:`update_policy`), then the value net's on the
    same minibatches (:meth:`update_value`, as many as the policy took before ``target_kl``
    stopped it). The two networks share no parameter and each has its own gradient clip, so this
    is the joint-loss update of CleanRL and SB3 step for step (tests/test_two_pass_updates.py).

    With data-parallel processes (``comm``), gradients are averaged before clipping and the
    advantages are normalized with the statistics of every process's minibatch together.
    """

    def __init__(self, agent: Any, cfg: Any, comm: Comm = SINGLE) -> None:
        super().__init__(agent, cfg, comm)
        self.optimizers["optimizer"] = torch.optim.Adam(
            list(agent.policy.parameters()) + list(agent.value.parameters()), lr=cfg.learning_rate, eps=1e-5,
            fused=True,  # one kernel for all parameters: the step costs a third of the unfused one on CPU
        )
        self.generator: torch.Generator | None = None  # the minibatches' permutations (None: torch's global one)
        self._taken: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def set_progress(self, fraction_done: float) -> None:
        """Linear learning-rate annealing to 0, when enabled."""
        if self.cfg.anneal_lr:
            for group in self.optimizers["optimizer"].param_groups:
                group["lr"] = self.cfg.learning_rate * max(0.0, 1.0 - fraction_done)

    def update_policy(self, batch: Batch) -> dict[str, float]:
        """``update_epochs`` epochs of ``num_minibatches`` clipped-surrogate steps, stopped
        early where the approximate KL passes ``target_kl``."""
        names = ("policy_loss", "entropy", "approx_kl", "clipfrac")
        sums = torch.zeros(len(names), device=batch.obs.device)
        with torch.no_grad():  # the normalizer is frozen during the update: normalize once
            obs_n = self.agent.obs_rms.normalize(batch.obs)
        self._taken = []  # (obs, returns, old values) of each minibatch the policy took, for the value net
        for epoch in self._epochs(batch, obs_n):
            if not self._policy_epoch(epoch, sums):
                break  # target_kl reached
        metrics = {f"losses/{k}": float(v) / len(self._taken) for k, v in zip(names, sums.tolist())}
        metrics["losses/num_minibatch_updates"] = float(len(self._taken))
        return metrics

    def _epochs(self, batch: Batch, obs_n: torch.Tensor) -> Any:
        """Per epoch, the minibatches: one gather per field and epoch, then contiguous slices (views)."""
        mb_size = len(batch) // self.cfg.num_minibatches
        for _ in range(self.cfg.update_epochs):
            perm = torch.randperm(len(batch), generator=self.generator, device="cpu").to(batch.obs.device)
            fields = [x[perm] for x in (obs_n, batch.actions, batch.logp_old, batch.advantages, batch.returns,
                                        batch.values_old)]
            yield ([x[s : s + mb_size] for x in fields] for s in range(0, len(batch), mb_size))

    def _policy_epoch(self, minibatches: Any, sums: torch.Tensor) -> bool:
        """One epoch's steps; False where the approximate KL passed ``target_kl`` (the rest of
        the update is skipped, in every data-parallel process alike)."""
        for obs, act, logp_old, adv, ret, v_old in minibatches:
            approx_kl = self._policy_step(obs, act, logp_old, adv, sums)
            self._taken.append((obs, ret, v_old))
            if self.cfg.target_kl is not None and self.comm.mean(approx_kl).item() > self.cfg.target_kl:
                return False
        return True

    def _policy_step(self, obs: torch.Tensor, act: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor,
                     sums: torch.Tensor) -> torch.Tensor:
        """One Adam step on the clipped surrogate minus the entropy bonus; adds the minibatch's
        metrics to ``sums`` and returns its approximate KL."""
        cfg = self.cfg
        if cfg.norm_adv:
            adv = normalize_advantages(adv, self.comm)
        mean, std = self.agent.policy(obs)
        logp = gaussian_log_prob(mean, std, act)
        pg_loss, m = clipped_surrogate_loss(logp, logp_old, adv, cfg.clip_coef)
        entropy = gaussian_entropy(std).mean()
        self.gradient_step(self.optimizers["optimizer"], pg_loss - cfg.ent_coef * entropy,
                           list(self.agent.policy.parameters()))
        sums += torch.stack([pg_loss.detach(), entropy.detach(), m["approx_kl"], m["clipfrac"]])
        return m["approx_kl"]

    def update_value(self, batch: Batch) -> dict[str, float]:
        """One step of the value loss (clipped around the old values with ``clip_vloss``) on each
        minibatch the policy took."""
        params = list(self.agent.value.parameters())
        total = torch.zeros((), device=batch.obs.device)
        clip = self.cfg.clip_coef if self.cfg.clip_vloss else None
        for obs, ret, v_old in self._taken:
            v_loss = value_loss(self.agent.value(obs), ret, v_old, clip)
            self.gradient_step(self.optimizers["optimizer"], self.cfg.vf_coef * v_loss, params)
            total += v_loss.detach()
        with torch.no_grad():
            ev = float(explained_variance(batch.values_old, batch.returns))
        return {"losses/value_loss": float(total) / len(self._taken), "losses/explained_variance": ev}
