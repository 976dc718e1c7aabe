"""Export a trained policy as a TorchScript program: raw observations in, env actions out.

The program carries the observation normalizer and the action range, so it needs plain torch
only::

    policy = torch.jit.load("policy.pt")
    actions = policy(obs)          # obs: float32 [B, obs_dim] -> actions: float32 [B, act_dim]
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from stridelab.models import Agent


class DeterministicPolicy(nn.Module):
    """``clip(mean(normalize(obs)))`` mapped onto the action box, in float32."""

    def __init__(self, agent: Agent) -> None:
        super().__init__()
        rms = agent.obs_rms
        self.register_buffer("obs_mean", rms.mean.detach().float().clone())
        self.register_buffer("obs_std", torch.sqrt(rms.var + rms.epsilon).detach().float().clone())
        self.clip = float(rms.clip)
        self.trunk = copy.deepcopy(agent.policy.trunk).float()
        self.mu = copy.deepcopy(agent.policy.mu).float()
        self.register_buffer("action_low", agent.action_low.detach().float().clone())
        self.register_buffer("action_high", agent.action_high.detach().float().clone())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = ((obs - self.obs_mean) / self.obs_std).clamp(-self.clip, self.clip)
        u = torch.tanh(self.mu(self.trunk(x)))
        return self.action_low + (u + 1.0) * 0.5 * (self.action_high - self.action_low)


def export_policy(agent: Agent, path: Path) -> Path:
    """Write the deterministic policy as TorchScript to ``path``; returns the path."""
    module = DeterministicPolicy(agent.cpu()).eval()
    scripted = torch.jit.script(module)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    scripted.save(str(tmp))
    tmp.replace(path)
    return path
