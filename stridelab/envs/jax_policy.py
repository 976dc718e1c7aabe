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

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import torch
from torch import nn


def _to_jax(t: torch.Tensor) -> jax.Array:
    return jnp.from_dlpack(t.detach().float().contiguous())


# The torch layers the mirror knows, by the name it walks them with.
_ACTIVATIONS = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.ELU: "elu", nn.SiLU: "silu"}
_JAX_ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "elu": jax.nn.elu, "silu": jax.nn.silu}


def unsupported(agent: Any) -> str | None:
    """Why the fused rollout cannot mirror ``agent``'s policy, in a few words; None when it can
    (a :class:`~stridelab.models.GaussianPolicy` whose trunk is Linear layers and the
    activations of :data:`stridelab.models.ACTIVATIONS`)."""
    from stridelab.models import ActorCritic, GaussianPolicy

    if not isinstance(agent, ActorCritic) or type(agent.policy) is not GaussianPolicy:
        return f"the policy {type(getattr(agent, 'policy', agent)).__name__} is not stridelab's GaussianPolicy"
    if agent.reflection is not None:
        return "the policy is left-right symmetric (--symmetric)"
    for layer in agent.policy.trunk:
        if not isinstance(layer, nn.Linear) and type(layer) not in _ACTIVATIONS:
            return f"the policy's layer {type(layer).__name__} has no JAX mirror"
    return None


def supports(agent: Any) -> bool:
    """Whether the fused rollout can run ``agent``'s policy (see :func:`unsupported`)."""
    return unsupported(agent) is None


def structure(agent: Any) -> tuple[str, ...]:
    """The trunk's layers as names (``("linear", "relu", ...)``), then the std head's kind
    (``"softplus_std"`` or ``"log_std"``): the static part of the mirror, the weights
    (:func:`policy_params`) being its arrays."""
    trunk = tuple("linear" if isinstance(m, nn.Linear) else _ACTIVATIONS[type(m)] for m in agent.policy.trunk)
    return (*trunk, "softplus_std" if agent.policy.state_dependent_std else "log_std")


@torch.no_grad()
def policy_params(agent: Any, via_host: bool = False) -> dict[str, Any]:
    """The arrays :func:`sample` needs, taken from a torch :class:`~stridelab.models.ActorCritic`.

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
        "std": (j(pol.std.weight), j(pol.std.bias)) if pol.state_dependent_std else (j(pol.log_std),),
        "low": j(agent.action_low),
        "high": j(agent.action_high),
    }


def mean_std(params: dict[str, Any], obs: jax.Array, clip: float, min_std: float,
             layers: tuple[str, ...]) -> tuple[jax.Array, jax.Array]:
    """``GaussianPolicy(obs_rms.normalize(obs))`` in JAX: ``obs [N, obs_dim]`` -> ``(mean, std)``,
    the trunk and the std head as :func:`structure` lists them in ``layers``."""
    h = jnp.clip((obs - params["obs_mean"]) / params["obs_std"], -clip, clip)
    linears = iter(params["trunk"])
    *trunk, std_kind = layers
    for kind in trunk:
        if kind == "linear":
            w, b = next(linears)
            h = h @ w.T + b
        else:
            h = _JAX_ACTIVATIONS[kind](h)
    mean = jnp.tanh(h @ params["mu"][0].T + params["mu"][1])
    if std_kind == "log_std":
        return mean, jnp.broadcast_to(jnp.exp(params["std"][0]), mean.shape)
    return mean, jax.nn.softplus(h @ params["std"][0].T + params["std"][1]) + min_std


def sample(params: dict[str, Any], obs: jax.Array, key: jax.Array, clip: float, min_std: float,
           layers: tuple[str, ...], normal: Callable[..., jax.Array] = jax.random.normal
           ) -> tuple[jax.Array, jax.Array]:
    """``(env_action, u)`` as :meth:`ActorCritic.act` returns them: ``u ~ N(mean, std)`` and
    ``clip(u, -1, 1)`` mapped onto the env's action box. ``normal(key, shape, dtype)`` draws the
    standard normal noise (a shard of a split batch draws its rows of the whole batch's)."""
    mean, std = mean_std(params, obs, clip, min_std, layers)
    u = mean + std * normal(key, mean.shape, mean.dtype)
    low, high = params["low"], params["high"]
    return low + (jnp.clip(u, -1.0, 1.0) + 1.0) * 0.5 * (high - low), u
