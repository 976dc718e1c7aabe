"""Policy, value network and observation normalizer, bundled in one :class:`Agent`.

The normalizer lives inside the agent (as buffers), so saving, loading and exporting the agent
carries it along: an exported policy takes raw observations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal


class RunningMeanStd(nn.Module):
    """Running mean and (population) variance of a stream, merged batch by batch.

    Chan et al.'s parallel update, as in the original design. Statistics are kept in float64 so
    millions of merged samples do not drift.

    Args:
        shape: shape of one sample (``(obs_dim,)``).
        epsilon: added to the variance before the square root in :meth:`normalize`.
        clip: normalized values are clipped to ``[-clip, clip]``.
    """

    def __init__(self, shape: Sequence[int], epsilon: float = 1e-8, clip: float = 10.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(tuple(shape), dtype=torch.float64))
        self.register_buffer("var", torch.ones(tuple(shape), dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.epsilon = epsilon
        self.clip = clip

    @torch.no_grad()
    def update(self, x: torch.Tensor, comm: Any = None) -> None:
        """Merge a batch ``[B, *shape]`` into the statistics; with a data-parallel ``comm``
        (:class:`stridelab.distributed.Comm`), the union of every process's batch."""
        x = x.reshape(-1, *self.mean.shape).to(torch.float64)
        if comm is None or not comm.active:
            self.update_from_moments(x.mean(0), x.var(0, unbiased=False), x.shape[0])
            return
        # Centre on the running mean first (all processes hold the same one): sums of squares of
        # small numbers keep their precision.
        d = x - self.mean
        n = float(comm.sum(torch.tensor([float(x.shape[0])], dtype=torch.float64, device=x.device)).item())
        s = comm.sum(d.sum(0))
        ss = comm.sum(d.square().sum(0))
        mean_d = s / n
        self.update_from_moments(self.mean + mean_d, (ss / n - mean_d.square()).clamp_min(0.0), n)

    @torch.no_grad()
    def update_from_moments(self, batch_mean: torch.Tensor, batch_var: torch.Tensor, batch_count: float) -> None:
        delta = batch_mean - self.mean
        total = self.count + batch_count
        m2 = self.var * self.count + batch_var * batch_count + delta.square() * self.count * batch_count / total
        self.mean.add_(delta * batch_count / total)
        self.var.copy_(m2 / total)
        self.count.fill_(total)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(x.dtype)
        std = torch.sqrt(self.var + self.epsilon).to(x.dtype)
        return ((x - mean) / std).clamp(-self.clip, self.clip)


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class GaussianPolicy(nn.Module):
    """The original design's policy: ReLU trunk, tanh-bounded mean, softplus std + 0.001.

    Works in the normalized action box ``[-1, 1]^act_dim``; :class:`Agent` maps to the env's range.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (128, 128), min_std: float = 1e-3,
                 init_std: float | None = None) -> None:
        super().__init__()
        self.trunk = _mlp([obs_dim, *hidden])
        self.trunk.append(nn.ReLU())
        self.mu = nn.Linear(hidden[-1], act_dim)
        self.std = nn.Linear(hidden[-1], act_dim)
        self.min_std = min_std
        # Small initial mean so early actions centre on zero (Andrychowicz et al. 2021, "What
        # matters in on-policy RL", C.3: last policy layer scaled by 0.01).
        nn.init.orthogonal_(self.mu.weight, gain=0.01)
        nn.init.zeros_(self.mu.bias)
        nn.init.orthogonal_(self.std.weight, gain=0.01)
        # softplus(b) + min_std = init_std at the start; None keeps softplus(0) + min_std ~ 0.69.
        if init_std is None:
            nn.init.zeros_(self.std.bias)
        else:
            if not init_std > min_std:
                raise ValueError(f"init_std must be greater than min_std {min_std}, got {init_std}")
            nn.init.constant_(self.std.bias, math.log(math.expm1(init_std - min_std)))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``obs [B, obs_dim]`` (normalized) -> ``(mean [B, act_dim], std [B, act_dim])``."""
        h = self.trunk(obs)
        return torch.tanh(self.mu(h)), F.softplus(self.std(h)) + self.min_std


class ValueNet(nn.Module):
    """State-value function ``V(s)``: ReLU MLP with one output."""

    def __init__(self, obs_dim: int, hidden: Sequence[int] = (128, 128)) -> None:
        super().__init__()
        self.net = _mlp([obs_dim, *hidden, 1])

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs [B, obs_dim]`` (normalized) -> ``[B]``."""
        return self.net(obs).squeeze(-1)


class Agent(nn.Module):
    """Normalizer + policy + value net, with the env's action range.

    Policy samples ``u ~ N(mean, std)`` live in ``[-1, 1]``-space; the env receives
    ``clip(u, -1, 1)`` mapped affinely onto ``[action_low, action_high]``. Log-probabilities are of
    the unclipped sample, as in Stable-Baselines3 and CleanRL.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        action_low: Sequence[float] | None = None,
        action_high: Sequence[float] | None = None,
        hidden: Sequence[int] = (128, 128),
        value_hidden: Sequence[int] = (128, 128),
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.obs_rms = RunningMeanStd((obs_dim,))
        self.policy = GaussianPolicy(obs_dim, act_dim, hidden, init_std=init_std)
        self.value = ValueNet(obs_dim, value_hidden)
        low = torch.full((act_dim,), -1.0) if action_low is None else torch.as_tensor(action_low, dtype=torch.float32)
        high = torch.full((act_dim,), 1.0) if action_high is None else torch.as_tensor(action_high, dtype=torch.float32)
        self.register_buffer("action_low", low)
        self.register_buffer("action_high", high)

    def dist_params(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw ``obs [B, obs_dim]`` -> Gaussian ``(mean, std)``, each ``[B, act_dim]``."""
        return self.policy(self.obs_rms.normalize(obs))

    def dist(self, obs: torch.Tensor) -> Normal:
        return Normal(*self.dist_params(obs))

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw ``obs [B, obs_dim]`` -> ``V(s) [B]``."""
        return self.value(self.obs_rms.normalize(obs))

    def to_env_action(self, u: torch.Tensor) -> torch.Tensor:
        """Map ``[-1, 1]``-space samples to the env's action box (clipping first)."""
        u = u.clamp(-1.0, 1.0)
        return self.action_low + (u + 1.0) * 0.5 * (self.action_high - self.action_low)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw ``obs [B, obs_dim]`` -> ``(env_action [B, act_dim], sample u [B, act_dim])``."""
        mean, std = self.dist_params(obs)
        u = mean if deterministic else mean + std * torch.randn_like(mean)
        return self.to_env_action(u), u

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic env action for raw observations (what export traces)."""
        mean, _ = self.dist_params(obs)
        return self.to_env_action(mean)
