"""The one batched-environment interface every simulator adapter implements.

Everything crossing this boundary is a torch tensor on the training device, batched over
``N = num_envs`` environments. Ended environments restart on their own (auto-reset), and the
step reports what a learner needs to treat the two ways an episode ends differently:

* ``terminated``: the task ended (the ant flipped over). No value beyond this state.
* ``truncated``: the time limit cut the episode. The state still has value, so learners
  bootstrap from ``V(final_obs)`` (Pardo et al. 2018, "Time Limits in Reinforcement Learning").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch


class StepResult(NamedTuple):
    """What one batched step returns. All tensors are ``[N]`` or ``[N, obs_dim]``."""

    obs: torch.Tensor
    """``[N, obs_dim]`` observation to act on next: the first observation of a new episode
    where the previous one ended at this step."""
    reward: torch.Tensor
    """``[N]`` reward of this step."""
    terminated: torch.Tensor
    """``[N]`` bool, the episode ended in a terminal state."""
    truncated: torch.Tensor
    """``[N]`` bool, the episode hit the time limit without terminating."""
    final_obs: torch.Tensor
    """``[N, obs_dim]`` observation this step reached, before any reset. Equals ``obs``
    where the episode goes on; the true last observation where it ended."""
    episode_return: torch.Tensor
    """``[N]`` undiscounted return of the episode that ended at this step (valid where done)."""
    episode_length: torch.Tensor
    """``[N]`` length of the episode that ended at this step (valid where done)."""

    @property
    def done(self) -> torch.Tensor:
        return self.terminated | self.truncated


@dataclass(frozen=True)
class EnvSpec:
    """Static facts about a task."""

    name: str
    simulator: str
    obs_dim: int
    act_dim: int
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    dt: float
    """Seconds of simulated time per env step (for real-time video)."""
    episode_length: int
    reflection: dict[str, list[float]] | None = None
    """The task's left-right reflection, if it has one: ``obs_index``, ``obs_sign``, ``act_index``,
    ``act_sign``, ``key_index`` (:class:`stridelab.models.Reflection`; ``--symmetric`` builds a
    policy on it)."""


class VecEnv(Protocol):
    """A batch of ``num_envs`` copies of one task, stepped together."""

    spec: EnvSpec
    num_envs: int
    device: torch.device

    def reset(self, seed: int) -> torch.Tensor:
        """Start every env from a fresh random state; returns ``[N, obs_dim]``."""
        ...

    def step(self, action: torch.Tensor) -> StepResult:
        """Apply ``[N, act_dim]`` actions (in ``spec``'s action range) to every env."""
        ...

    def close(self) -> None: ...

