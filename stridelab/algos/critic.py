"""The critic fit TRPO, NPG and VPG share: Adam on the value loss, apart from the policy's update."""

from __future__ import annotations

from typing import Any

import torch

from stridelab.algos.base import gradient_step
from stridelab.ops import explained_variance, value_loss
from stridelab.rollout import Batch


class AdamCritic:
    """``vf_epochs`` Adam epochs of ``vf_minibatches`` minibatches on the value loss (clipped
    around the old values with ``clip_vloss``; gradients clipped with ``clip_grad``).

    :meth:`prepare` draws the minibatches when the policy's update is done, so the random stream
    is the same whatever runs before :meth:`fit` (the runner starts the next rollout there).
    """

    def __init__(self, agent: Any, cfg: Any, comm: Any) -> None:
        self.agent, self.cfg, self.comm = agent, cfg, comm
        self.optimizer = torch.optim.Adam(agent.value.parameters(), lr=cfg.vf_learning_rate, eps=1e-5, fused=True)
        self._plan: tuple[torch.Tensor, list[torch.Tensor]] | None = None

    def anneal(self, fraction_done: float) -> None:
        if self.cfg.anneal_lr:
            for group in self.optimizer.param_groups:
                group["lr"] = self.cfg.vf_learning_rate * max(0.0, 1.0 - fraction_done)

    def prepare(self, batch: Batch, obs_n: torch.Tensor) -> None:
        """Draw the epochs' permutations of the batch (normalized observations ``obs_n``)."""
        self._plan = (obs_n, [torch.randperm(len(batch), device="cpu").to(obs_n.device)
                              for _ in range(self.cfg.vf_epochs)])

    def fit(self, batch: Batch) -> dict[str, float]:
        assert self._plan is not None, "prepare() runs first, on the same batch"
        (obs_n, perms), value, cfg = self._plan, self.agent.value, self.cfg
        mb_size = len(batch) // cfg.vf_minibatches
        clip = cfg.clip_coef if cfg.clip_vloss else None
        total, n = torch.zeros((), device=obs_n.device), 0
        for perm in perms:
            for start in range(0, len(batch), mb_size):
                idx = perm[start : start + mb_size]
                loss = value_loss(value(obs_n[idx]), batch.returns[idx], batch.values_old[idx], clip)
                gradient_step(self.optimizer, loss, list(value.parameters()), self.comm, cfg)
                total += loss.detach()
                n += 1
        self._plan = None
        with torch.no_grad():
            ev = float(explained_variance(batch.values_old, batch.returns))
        return {"losses/value_loss": float(total) / n, "losses/explained_variance": ev}
