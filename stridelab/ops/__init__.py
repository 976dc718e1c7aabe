"""Pure torch math: no envs, loggers or optimizer state, so each piece is tested alone."""

from stridelab.ops.diagnostics import policy_change
from stridelab.ops.gae import compute_gae
from stridelab.ops.kl import gaussian_entropy, gaussian_kl, gaussian_log_prob
from stridelab.ops.ppo_loss import clipped_surrogate_loss, explained_variance, value_loss

__all__ = [
    "clipped_surrogate_loss",
    "compute_gae",
    "explained_variance",
    "gaussian_entropy",
    "gaussian_kl",
    "gaussian_log_prob",
    "policy_change",
    "value_loss",
]
