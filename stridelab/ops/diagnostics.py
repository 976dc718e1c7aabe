"""How far an update moved the policy, measured the same way for every algorithm.

Engstrom et al. 2020 ("Implementation Matters in Deep Policy Gradients", section 4) showed that
PPO's clipping does not keep the new policy inside a trust region: its KL to the old policy and
its probability ratios drift past what the clip suggests, while TRPO's stay bounded. These are
the numbers that show it, computed on the whole batch after the policy's update.
"""

from __future__ import annotations

import torch

from stridelab.ops.kl import gaussian_entropy, gaussian_kl, gaussian_log_prob


@torch.no_grad()
def policy_change(mean_old: torch.Tensor, std_old: torch.Tensor, logp_old: torch.Tensor, mean_new: torch.Tensor,
                  std_new: torch.Tensor, actions: torch.Tensor, clip_coef: float) -> dict[str, float]:
    """``KL(old || new)`` (mean and max over the batch), the probability ratios
    ``pi_new(a|s) / pi_old(a|s)`` of the batch's actions (largest, smallest, and the fraction
    outside ``[1 - clip_coef, 1 + clip_coef]``) and the new policy's entropy.

    Shapes: means, stds and ``actions`` ``[B, act_dim]``; ``logp_old`` ``[B]``.
    """
    kl = gaussian_kl(mean_old, std_old, mean_new, std_new)
    ratio = torch.exp(gaussian_log_prob(mean_new, std_new, actions) - logp_old)
    outside = (ratio < 1.0 - clip_coef) | (ratio > 1.0 + clip_coef)
    return {"kl_mean": float(kl.mean()), "kl_max": float(kl.max()), "ratio_max": float(ratio.max()),
            "ratio_min": float(ratio.min()), "ratio_outside_clip": float(outside.float().mean()),
            "entropy": float(gaussian_entropy(std_new).mean())}
