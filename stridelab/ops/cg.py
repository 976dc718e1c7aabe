"""Conjugate gradient and flat-parameter helpers for second-order policy updates."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from stridelab.ops.sums import dot


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int = 10, tol: float = 1e-10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``A x = b`` for symmetric positive definite ``A``, given only ``v -> A v``.

    Starts from ``x0 = 0`` (sb3-contrib starts from noise, which makes the step random).
    Stops after ``iters`` iterations or once ``||r||^2 < tol``.

    Returns:
        ``(x, residual_norm)`` with ``residual_norm = ||b - A x||`` as tracked by the recursion.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = dot(r, r)
    for _ in range(iters):
        if rr < tol:
            break
        Ap = matvec(p)
        alpha = rr / dot(p, Ap)
        x.add_(alpha * p)
        r.sub_(alpha * Ap)
        rr_new = dot(r, r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x, rr.sqrt()


def flat_grad(
    output: torch.Tensor, params: Sequence[torch.Tensor], retain_graph: bool = False, create_graph: bool = False
) -> torch.Tensor:
    """Gradient of a scalar w.r.t. ``params``, concatenated into one vector (zeros where unused)."""
    grads = torch.autograd.grad(output, params, retain_graph=retain_graph, create_graph=create_graph, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)])


def flat_params(params: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


@torch.no_grad()
def set_flat_params(params: Sequence[torch.Tensor], flat: torch.Tensor) -> None:
    """Copy ``flat`` into ``params`` in place (parameters keep their own storage)."""
    offset = 0
    for p in params:
        n = p.numel()
        p.copy_(flat[offset : offset + n].view_as(p))
        offset += n


def fisher_vector_product(
    kl: torch.Tensor, params: Sequence[torch.Tensor], damping: float,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v -> (H_KL + damping I) v``: Hessian-vector products of the mean KL by double backprop.

    At ``new == old`` the Hessian of ``KL(old || new)`` is the Fisher information matrix of the
    policy, so this is the Fisher-vector product TRPO needs (Schulman et al. 2015, appendix C).
    ``reduce`` averages ``H v`` over data-parallel processes before the damping is added.
    """
    grad_kl = flat_grad(kl, params, retain_graph=True, create_graph=True)

    def fvp(v: torch.Tensor) -> torch.Tensor:
        hv = flat_grad(dot(grad_kl, v), params, retain_graph=True)
        if reduce is not None:
            hv = reduce(hv)
        return hv + damping * v

    return fvp
