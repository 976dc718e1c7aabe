"""PPO's clipped surrogate (Schulman et al. 2017, arXiv:1707.06347) and value loss."""

from __future__ import annotations

import torch


def clipped_surrogate_loss(
    new_logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, clip_coef: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Negative clipped surrogate objective, to minimize.

    Args:
        new_logp, old_logp, advantages: ``[B]``.
        clip_coef: epsilon of the clip ``[1 - eps, 1 + eps]``.

    Returns:
        ``(loss, metrics)``; metrics hold ``approx_kl`` (the low-variance ``(r - 1) - log r``
        estimator of KL(old || new), Schulman's "Approximating KL divergence") and ``clipfrac``.
    """
    log_ratio = new_logp - old_logp
    ratio = log_ratio.exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef) * advantages
    loss = -torch.minimum(unclipped, clipped).mean()
    with torch.no_grad():
        metrics = {
            "approx_kl": ((ratio - 1.0) - log_ratio).mean(),
            "clipfrac": ((ratio - 1.0).abs() > clip_coef).float().mean(),
        }
    return loss, metrics


def value_loss(
    values: torch.Tensor, returns: torch.Tensor, old_values: torch.Tensor | None = None, clip: float | None = None
) -> torch.Tensor:
    """``0.5 * mean((V - R)^2)``; with ``clip``, PPO2's clipped value loss around ``old_values``."""
    err = (values - returns).square()
    if clip is not None and old_values is not None:
        v_clipped = old_values + (values - old_values).clamp(-clip, clip)
        err = torch.maximum(err, (v_clipped - returns).square())
    return 0.5 * err.mean()


def explained_variance(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - Var(target - pred) / Var(target)``; NaN when the target is constant."""
    var_t = target.var()
    return torch.where(var_t == 0, torch.full_like(var_t, float("nan")), 1.0 - (target - pred).var() / var_t)
