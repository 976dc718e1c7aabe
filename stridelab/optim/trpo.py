"""TRPO as a ``torch.optim.Optimizer`` (Schulman et al. 2015, arXiv:1502.05477).

Use it in any PyTorch code: the closure returns the surrogate loss and the mean
``KL(old || new)``, both computed at the parameters' current values::

    opt = TRPO(policy.parameters(), max_kl=0.01)

    def closure():
        mean, std = policy(obs)
        logp = Normal(mean, std).log_prob(actions).sum(-1)
        loss = -(torch.exp(logp - logp_old) * adv).mean()
        kl = gaussian_kl(mean_old, std_old, mean, std).mean()
        return loss, kl

    info = opt.step(closure)   # {'kl': ..., 'accepted': ..., ...}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from stridelab.ops.cg import conjugate_gradient, fisher_vector_product, flat_grad, flat_params, set_flat_params
from stridelab.ops.sums import dot

Closure = Callable[[], tuple[torch.Tensor, torch.Tensor]]


class TRPO(torch.optim.Optimizer):
    """Natural-gradient step with a KL trust region and a backtracking line search.

    ``step(closure)``:

    1. ``g = grad(loss)``; Fisher-vector products ``F v`` as Hessian-vector products of the KL
       (double backprop) plus ``damping * v``;
    2. conjugate gradient from ``x0 = 0`` solves ``F s = -g`` in ``cg_iters`` iterations;
    3. full step ``sqrt(2 max_kl / s'Fs) * s`` (the quadratic model's KL equals ``max_kl``);
    4. backtracking by ``backtrack_ratio``: the first step whose KL is at most ``max_kl`` and
       whose loss is lower than before is kept; if none of ``max_backtracks`` passes, the
       parameters are restored.

    Args:
        params: any iterable of parameters (or one param group); no matching by names.
        max_kl: trust-region radius on the mean ``KL(old || new)``.
        damping: added to the Fisher diagonal, for a well-posed CG solve.
        cg_iters: conjugate gradient iterations.
        backtrack_ratio: step shrink factor per line-search step, in ``(0, 1)``.
        max_backtracks: line-search steps tried (the full step included).
        line_search: False takes the full step as it is, with no check of the real KL or the
            loss: the natural policy gradient step (``accepted`` is then 1 for any finite step).
        reduce: for data-parallel training, a function returning the mean of a tensor over the
            processes (e.g. :meth:`stridelab.distributed.Comm.mean`). It is applied to the
            gradient, to every Fisher-vector product and to the line search's loss and KL, so
            every process computes the same step from its own share of the batch.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        max_kl: float = 0.01,
        damping: float = 0.1,
        cg_iters: int = 10,
        backtrack_ratio: float = 0.8,
        max_backtracks: int = 10,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
        line_search: bool = True,
    ) -> None:
        if not (math.isfinite(max_kl) and max_kl > 0):
            raise ValueError(f"max_kl must be a finite number > 0, got {max_kl!r}")
        if not (math.isfinite(damping) and damping >= 0):
            raise ValueError(f"damping must be a finite number >= 0, got {damping!r}")
        if not (isinstance(cg_iters, int) and cg_iters > 0):
            raise ValueError(f"cg_iters must be a positive integer, got {cg_iters!r}")
        if not (0 < backtrack_ratio < 1):
            raise ValueError(f"backtrack_ratio must be in (0, 1), got {backtrack_ratio!r}")
        if not (isinstance(max_backtracks, int) and max_backtracks > 0):
            raise ValueError(f"max_backtracks must be a positive integer, got {max_backtracks!r}")
        defaults = dict(max_kl=max_kl, damping=damping, cg_iters=cg_iters,
                        backtrack_ratio=backtrack_ratio, max_backtracks=max_backtracks, line_search=line_search)
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("TRPO takes one parameter group: the trust region is on the whole policy")
        self._reduce = reduce if reduce is not None else (lambda t: t)

    def _params(self) -> list[torch.Tensor]:
        return [p for p in self.param_groups[0]["params"] if p.requires_grad]

    def step(  # type: ignore[override]
        self, closure: Closure, fisher_closure: Callable[[], torch.Tensor] | None = None
    ) -> dict[str, float]:
        """One trust-region step.

        Args:
            closure: returns ``(loss, kl)`` at the current parameters, on the whole batch.
            fisher_closure: optionally returns the mean KL on a subsample of the batch; the
                Fisher-vector products then use it (cheaper), while the line search still checks
                the trust region with ``closure``'s KL on the whole batch.

        Returns:
            ``kl``, ``loss_before``, ``loss_after``, ``expected_improvement``, ``backtracks``,
            ``accepted`` (1.0 or 0.0), ``cg_residual``, ``step_norm``.
        """
        if closure is None:
            raise ValueError("TRPO.step needs a closure returning (loss, kl)")
        group, params = self.param_groups[0], self._params()
        loss_before, g, full_step, residual = self._full_step(closure, fisher_closure, params, group)
        info = {
            "loss_before": float(loss_before),
            "expected_improvement": float(-dot(g, full_step)),
            "cg_residual": float(residual),
            "accepted": 0.0,
            "backtracks": float(group["max_backtracks"]),
            "kl": 0.0,
            "loss_after": float(loss_before),
            "step_norm": 0.0,
        }
        if not bool(torch.isfinite(full_step).all()) or not bool(full_step.any()):
            return info
        if not group.get("line_search", True):
            return self._take(closure, params, full_step, info)
        return self._line_search(closure, params, full_step, loss_before, info, group)

    def _take(self, closure: Closure, params: list[torch.Tensor], full_step: torch.Tensor,
              info: dict[str, float]) -> dict[str, float]:
        """The full step, unchecked; its real KL and loss are reported."""
        set_flat_params(params, flat_params(params) + full_step)
        with torch.no_grad():
            new_loss, new_kl = (self._reduce(t) for t in closure())
        info.update(accepted=1.0, backtracks=0.0, kl=float(new_kl), loss_after=float(new_loss),
                    step_norm=float(dot(full_step, full_step).sqrt()))
        return info

    def _full_step(self, closure: Closure, fisher_closure: Callable[[], torch.Tensor] | None,
                   params: list[torch.Tensor], group: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """``(loss, g, full_step, cg_residual)``: the natural gradient direction ``-F^-1 g`` by
        conjugate gradient, scaled so that its quadratic KL estimate is ``max_kl``."""
        reduce = self._reduce
        with torch.enable_grad():
            loss, kl = closure()
            g = reduce(flat_grad(loss, params, retain_graph=fisher_closure is None))
            fisher_kl = kl if fisher_closure is None else fisher_closure()
            fvp = fisher_vector_product(fisher_kl, params, group["damping"], reduce=reduce)
            x, residual = conjugate_gradient(fvp, g, iters=group["cg_iters"])
            shs = dot(x, fvp(x))
        # Guard the sqrt: a zero gradient (or a non-PD curvature estimate) gives no step.
        scale = torch.sqrt(2.0 * group["max_kl"] / shs) if shs > 0 else torch.zeros_like(shs)
        return reduce(loss.detach()), g, scale * -x, residual

    def _line_search(self, closure: Closure, params: list[torch.Tensor], full_step: torch.Tensor,
                     loss_before: torch.Tensor, info: dict[str, float], group: dict[str, Any]) -> dict[str, float]:
        """Shrink the step by ``backtrack_ratio`` until the surrogate improves inside the trust
        region (on the whole batch); none found in ``max_backtracks`` tries: no step."""
        old, frac = flat_params(params), 1.0
        for i in range(group["max_backtracks"]):
            set_flat_params(params, old + frac * full_step)
            with torch.no_grad():
                new_loss, new_kl = (self._reduce(t) for t in closure())
            if bool(torch.isfinite(new_loss)) and new_kl <= group["max_kl"] and new_loss < loss_before:
                info.update(accepted=1.0, backtracks=float(i), kl=float(new_kl), loss_after=float(new_loss),
                            step_norm=float(frac * dot(full_step, full_step).sqrt()))
                return info
            frac *= group["backtrack_ratio"]
        set_flat_params(params, old)
        return info
