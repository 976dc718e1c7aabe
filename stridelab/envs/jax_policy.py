"""The torch policy mirrored into JAX, so a whole Brax rollout runs as one compiled program.

Stepping Brax from torch costs a Python round trip, two DLPack hand-overs and a handful of
small torch kernels per env step. :meth:`BraxVecEnv.rollout` instead runs ``T`` steps in one
jitted ``jax.lax.while_loop``: the policy's forward pass and the Gaussian sample happen inside
the compiled simulator loop, with the weights handed over from torch once per iteration (DLPack, zero-copy
on the same device). Learning stays in torch: the rollout only records observations and the
sampled ``u``; log-probabilities, values and GAE are computed afterwards by torch
(:func:`stridelab.rollout.make_batch`), so a float rounding difference between the two forward
passes never enters a gradient.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import torch
from torch import nn


def _to_jax(t: torch.Tensor) -> jax.Array:
    return jnp.from_dlpack(t.detach().float().contiguous())


def supports(agent: Any) -> bool:
    """Whether ``agent`` is the stock :class:`~stridelab.models.Agent` this mirror reproduces."""
    from stridelab.models import Agent, GaussianPolicy

    if type(agent) is not Agent or type(agent.policy) is not GaussianPolicy:
        return False
    return all(isinstance(m, (nn.Linear, nn.ReLU)) for m in agent.policy.trunk)


@torch.no_grad()
def policy_params(agent: Any, via_host: bool = False) -> dict[str, Any]:
    """The arrays :func:`sample` needs, taken from a torch :class:`~stridelab.models.Agent`.

    The observation normalizer's mean and std are cast to float32 exactly as
    :meth:`RunningMeanStd.normalize` casts them.
    """
    rms, pol = agent.obs_rms, agent.policy

    def j(t: torch.Tensor) -> jax.Array:
        return _to_jax(t.cpu() if via_host else t)

    linears = [m for m in pol.trunk if isinstance(m, nn.Linear)]
    return {
        "obs_mean": j(rms.mean.float()),
        "obs_std": j(torch.sqrt(rms.var + rms.epsilon).float()),
        "trunk": [(j(m.weight), j(m.bias)) for m in linears],
        "mu": (j(pol.mu.weight), j(pol.mu.bias)),
        "std": (j(pol.std.weight), j(pol.std.bias)),
        "low": j(agent.action_low),
        "high": j(agent.action_high),
    }


def mean_std(params: dict[str, Any], obs: jax.Array, clip: float, min_std: float) -> tuple[jax.Array, jax.Array]:
    """``GaussianPolicy(obs_rms.normalize(obs))`` in JAX: ``obs [N, obs_dim]`` -> ``(mean, std)``."""
    h = jnp.clip((obs - params["obs_mean"]) / params["obs_std"], -clip, clip)
    for w, b in params["trunk"]:
        h = jax.nn.relu(h @ w.T + b)
    mean = jnp.tanh(h @ params["mu"][0].T + params["mu"][1])
    std = jax.nn.softplus(h @ params["std"][0].T + params["std"][1]) + min_std
    return mean, std


def sample(params: dict[str, Any], obs: jax.Array, key: jax.Array, clip: float, min_std: float
           ) -> tuple[jax.Array, jax.Array]:
    """``(env_action, u)`` as :meth:`Agent.act` returns them: ``u ~ N(mean, std)`` and
    ``clip(u, -1, 1)`` mapped onto the env's action box."""
    mean, std = mean_std(params, obs, clip, min_std)
    u = mean + std * jax.random.normal(key, mean.shape, mean.dtype)
    low, high = params["low"], params["high"]
    return low + (jnp.clip(u, -1.0, 1.0) + 1.0) * 0.5 * (high - low), u
