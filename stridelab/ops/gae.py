"""Generalized advantage estimation with termination and truncation kept apart."""

from __future__ import annotations

import torch


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(gamma, lambda) over a rollout (Schulman et al. 2016, arXiv:1506.02438).

    Args:
        rewards: ``[T, N]`` reward of step t.
        values: ``[T, N]`` ``V(s_t)``.
        next_values: ``[T, N]`` ``V(s_{t+1})`` of the state step t actually reached: the
            *final* observation where the episode ended at t, so a time-limit truncation
            bootstraps from the state it was cut at.
        terminated: ``[T, N]`` the episode ended in a terminal state at t (no bootstrap).
        dones: ``[T, N]`` the episode ended at t for any reason (terminated or truncated):
            the advantage trace does not run across it.
        gamma: discount.
        gae_lambda: GAE lambda; 1 gives Monte-Carlo returns, 0 gives TD(0).

    Returns:
        ``(advantages [T, N], returns [T, N])`` with ``returns = advantages + values``.
    """
    not_terminal = 1.0 - terminated.to(values.dtype)
    not_done = 1.0 - dones.to(values.dtype)
    deltas = rewards + gamma * next_values * not_terminal - values
    advantages = torch.empty_like(values)
    running = torch.zeros_like(values[0])
    for t in range(values.shape[0] - 1, -1, -1):
        running = deltas[t] + gamma * gae_lambda * not_done[t] * running
        advantages[t] = running
    return advantages, advantages + values
