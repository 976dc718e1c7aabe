"""The one KL convention of stridelab, written once.

``KL(old || new)`` of diagonal Gaussians, **summed over action dimensions** (the KL of the joint
distribution) and averaged over the batch by the caller. sb3-contrib's TRPO averages over action
dimensions instead, which loosens the trust region as the action size grows.
"""

from __future__ import annotations

import math

import torch

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_kl(
    mean_old: torch.Tensor, std_old: torch.Tensor, mean_new: torch.Tensor, std_new: torch.Tensor
) -> torch.Tensor:
    """``KL(N(mean_old, std_old) || N(mean_new, std_new))`` per sample.

    All inputs ``[B, act_dim]``; returns ``[B]`` (summed over the action dimension).
    """
    var_old, var_new = std_old.square(), std_new.square()
    kl = torch.log(std_new / std_old) + (var_old + (mean_old - mean_new).square()) / (2.0 * var_new) - 0.5
    return kl.sum(-1)


def gaussian_log_prob(mean: torch.Tensor, std: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Log density of ``x [B, act_dim]`` under the diagonal Gaussian, summed: ``[B]``.

    Written out rather than through ``torch.distributions.Normal``, whose argument validation
    checks every parameter on each call (small kernels on CPU, a host sync on GPU): about a fifth
    of a PPO minibatch step on CPU.
    """
    z = (x - mean) / std
    return (-0.5 * z.square() - std.log()).sum(-1) - _HALF_LOG_2PI * x.shape[-1]


def gaussian_entropy(std: torch.Tensor) -> torch.Tensor:
    """Entropy of the diagonal Gaussian, summed over action dims: ``[B]``."""
    return std.log().sum(-1) + (0.5 + _HALF_LOG_2PI) * std.shape[-1]
