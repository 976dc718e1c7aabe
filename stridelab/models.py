"""Policy, value network and observation normalizer, bundled in one :class:`ActorCritic`.

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


class Reflection(nn.Module):
    """A task's left-right reflection R: which observation (action) entries swap places and which
    change sign when the world is mirrored in the robot's sagittal plane (a left turn becomes a
    right turn, the left legs the right ones). An involution: applied twice it is the identity.

    ``key_index`` names observation entries that R negates in place (Go1: the yaw and sideways
    commands), in order of precedence: the first nonzero one's sign says which half of the
    observation space a state lies in, R swapping the halves (:meth:`mirrored`).

    Args:
        obs_index, obs_sign: ``reflect_obs(x)[..., i] = x[..., obs_index[i]] * obs_sign[i]``.
        act_index, act_sign: the same for actions.
        key_index: the entries whose signs choose the half.
    """

    def __init__(self, obs_index: Sequence[int], obs_sign: Sequence[float], act_index: Sequence[int],
                 act_sign: Sequence[float], key_index: Sequence[int]) -> None:
        super().__init__()
        for name, index, sign in (("obs", obs_index, obs_sign), ("act", act_index, act_sign)):
            i, s = torch.as_tensor(index, dtype=torch.long), torch.as_tensor(sign, dtype=torch.float32)
            ones = torch.ones_like(s)
            involution = i.shape == s.shape and torch.equal(i[i], torch.arange(len(i))) and torch.equal(s * s[i], ones)
            if not involution or not torch.equal(s.abs(), ones):
                raise ValueError(f"the {name} reflection is not an involution: indices {i.tolist()}, signs {s.tolist()}")
            self.register_buffer(f"{name}_index", i)
            self.register_buffer(f"{name}_sign", s)
        keys = torch.as_tensor(key_index, dtype=torch.long)
        if not len(keys) or not all(self.obs_index[k] == k and self.obs_sign[k] == -1 for k in keys):
            raise ValueError(f"key_index {keys.tolist()}: give entries the reflection negates in place")
        self.register_buffer("key_index", keys)

    @classmethod
    def from_spec(cls, spec: dict[str, Sequence[float]]) -> Reflection:
        """From an :class:`~stridelab.envs.EnvSpec`'s ``reflection`` dict (the same five keys)."""
        return cls(spec["obs_index"], spec["obs_sign"], spec["act_index"], spec["act_sign"], spec["key_index"])

    def obs(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(-1, self.obs_index) * self.obs_sign.to(x.dtype)

    def act(self, a: torch.Tensor) -> torch.Tensor:
        return a.index_select(-1, self.act_index) * self.act_sign.to(a.dtype)

    def mirrored(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1]`` bool: whether each observation lies in the mirrored half (its first nonzero
        key negative). ``mirrored(R x) = not mirrored(x)`` wherever a key is nonzero."""
        keys = x.index_select(-1, self.key_index)
        flip = torch.zeros_like(keys.narrow(-1, 0, 1), dtype=torch.bool)
        for j in range(keys.shape[-1] - 1, -1, -1):  # the first nonzero key decides
            k = keys.narrow(-1, j, 1)
            flip = (k < 0) | ((k == 0) & flip)  # logic ops, not where(): ONNX Runtime has no boolean Where
        return flip

    def canonical(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x reflected where it lies in the mirrored half, that mask)``: every state in one half."""
        flip = self.mirrored(x)
        return torch.where(flip, self.obs(x), x), flip


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


ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "silu": nn.SiLU}
"""The hidden layers' activations ``--activation`` offers (each mirrored in JAX for the fused rollout)."""


def mlp(sizes: Sequence[int], activation: str = "relu", activate_last: bool = False) -> nn.Sequential:
    """``Linear(sizes[0], sizes[1]), act, ..., Linear(sizes[-2], sizes[-1])`` (and a last
    ``act`` with ``activate_last``): plain layers, so the JAX mirror and export can walk them."""
    act = ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or activate_last:
            layers.append(act())
    return nn.Sequential(*layers)


class GaussianPolicy(nn.Module):
    """The original design's policy: an MLP trunk, tanh-bounded mean, softplus std + ``min_std``.

    Works in the normalized action box ``[-1, 1]^act_dim``; :class:`ActorCritic` maps to the
    env's range. This module is the one definition of the policy: the fused rollout's JAX
    function (:mod:`stridelab.envs.jax_policy`) and the exported program
    (:mod:`stridelab.export`) are built by walking its layers.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (128, 128), min_std: float = 1e-3,
                 init_std: float | None = None, activation: str = "relu", state_dependent_std: bool = True,
                 ortho_init: bool = False) -> None:
        super().__init__()
        self.trunk = mlp([obs_dim, *hidden], activation, activate_last=True)
        self.mu = nn.Linear(hidden[-1], act_dim)
        self.min_std = min_std
        self.state_dependent_std = state_dependent_std
        if init_std is not None and not init_std > min_std:
            raise ValueError(f"init_std must be greater than min_std {min_std}, got {init_std}")
        if state_dependent_std:  # the original design's head: softplus(W h + b) + min_std
            self.std = nn.Linear(hidden[-1], act_dim)
        else:  # one learned log-std per action dimension (SB3, CleanRL, rsl_rl)
            start = math.log(math.log(2.0) + min_std if init_std is None else init_std)
            self.log_std = nn.Parameter(torch.full((act_dim,), start))
        # Small initial mean so early actions centre on zero (Andrychowicz et al. 2021, "What
        # matters in on-policy RL", C.3: last policy layer scaled by 0.01).
        nn.init.orthogonal_(self.mu.weight, gain=0.01)
        nn.init.zeros_(self.mu.bias)
        if state_dependent_std:
            nn.init.orthogonal_(self.std.weight, gain=0.01)
            # softplus(b) + min_std = init_std at the start; None keeps softplus(0) + min_std ~ 0.69.
            init_bias = 0.0 if init_std is None else math.log(math.expm1(init_std - min_std))
            nn.init.constant_(self.std.bias, init_bias)
        if ortho_init:
            orthogonal_init(self.trunk)

    def mean(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs [B, obs_dim]`` (normalized) -> the deterministic action ``[B, act_dim]`` in [-1, 1]."""
        return torch.tanh(self.mu(self.trunk(obs)))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``obs [B, obs_dim]`` (normalized) -> ``(mean [B, act_dim], std [B, act_dim])``."""
        h = self.trunk(obs)
        mean = torch.tanh(self.mu(h))
        return mean, self._std(h, mean)

    @torch.jit.unused  # the exported programs run mean() alone; TorchScript need not see both heads
    def _std(self, h, mean):  # noqa: ANN001, ANN202  (TorchScript reads no postponed annotations here)
        if self.state_dependent_std:
            return F.softplus(self.std(h)) + self.min_std
        return self.log_std.exp().expand_as(mean)


def orthogonal_init(net: nn.Sequential, last_gain: float | None = None) -> None:
    """Orthogonal weights with gain sqrt(2) and zero biases for every Linear layer of ``net``, the
    last one with ``last_gain`` if given: the "orthogonal initialization and layer scaling" of
    OpenAI Baselines' PPO2 that Engstrom et al. 2020 list among PPO's code-level optimizations."""
    linears = [m for m in net if isinstance(m, nn.Linear)]
    for i, layer in enumerate(linears):
        gain = last_gain if (last_gain is not None and i == len(linears) - 1) else math.sqrt(2.0)
        nn.init.orthogonal_(layer.weight, gain=gain)
        nn.init.zeros_(layer.bias)


class ValueNet(nn.Module):
    """State-value function ``V(s)``: an MLP with one output."""

    def __init__(self, obs_dim: int, hidden: Sequence[int] = (128, 128), activation: str = "relu",
                 ortho_init: bool = False) -> None:
        super().__init__()
        self.net = mlp([obs_dim, *hidden, 1], activation)
        if ortho_init:
            orthogonal_init(self.net, last_gain=1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs [B, obs_dim]`` (normalized) -> ``[B]``."""
        return self.net(obs).squeeze(-1)


class ActorCritic(nn.Module):
    """The networks an agent learns: observation normalizer, policy and value net, with the
    env's action range. (Not an algorithm: those live in :mod:`stridelab.algos`.)

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
        hidden_sizes: Sequence[int] = (128, 128),
        value_hidden_sizes: Sequence[int] | None = None,
        activation: str = "relu",
        init_std: float | None = None,
        state_dependent_std: bool = True,
        ortho_init: bool = False,
        obs_clip: float = 10.0,
        reflection: Reflection | None = None,
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.obs_rms = RunningMeanStd((obs_dim,), clip=obs_clip if obs_clip > 0 else math.inf)
        self.policy = GaussianPolicy(obs_dim, act_dim, hidden_sizes, init_std=init_std, activation=activation,
                                     state_dependent_std=state_dependent_std, ortho_init=ortho_init)
        self.value = ValueNet(obs_dim, hidden_sizes if value_hidden_sizes is None else value_hidden_sizes, activation,
                              ortho_init=ortho_init)
        low = torch.full((act_dim,), -1.0) if action_low is None else torch.as_tensor(action_low, dtype=torch.float32)
        high = torch.full((act_dim,), 1.0) if action_high is None else torch.as_tensor(action_high, dtype=torch.float32)
        if reflection is not None:
            _check_reflection(reflection, obs_dim, act_dim, low, high)
        self.reflection = reflection
        self.register_buffer("action_low", low)
        self.register_buffer("action_high", high)

    def canonical(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw ``obs`` as the networks see them. With a reflection R (``--symmetric``) every state
        is taken into one half of the observation space (a right turn becomes a left turn: R s
        where s lies in the mirrored half), so the policy is symmetric by construction,
        ``pi(R s) = R pi(s)``: a gait learned turning one way is the gait turning the other, and
        every turn trains both. The rollout stores these observations and the actions in the same
        frame (:meth:`act`), so the learner never sees the reflection and its update costs nothing
        more. (A canonicalization, as in Kaba et al. 2023, "Equivariance with learned
        canonicalization functions", given here by the task: docs/design.md.)"""
        return self._seen(obs)[0]

    def _seen(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(canonical(obs), which rows were reflected)``; ``None`` for the mask without a reflection."""
        # States with every key zero (Go1 standing or walking straight) stay as they are: nothing
        # ties them to their mirror images, and a key flickering around 0 switches frames.
        return (obs, None) if self.reflection is None else self.reflection.canonical(obs)

    def dist_params(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw ``obs [B, obs_dim]`` -> Gaussian ``(mean, std)``, each ``[B, act_dim]``, over the
        actions of :meth:`canonical`'s frame (those of ``obs`` itself without a reflection)."""
        return self.policy(self.obs_rms.normalize(self.canonical(obs)))

    def dist(self, obs: torch.Tensor) -> Normal:
        return Normal(*self.dist_params(obs))

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw ``obs [B, obs_dim]`` -> ``V(s) [B]``."""
        return self.value(self.obs_rms.normalize(self.canonical(obs)))

    def to_env_action(self, u: torch.Tensor) -> torch.Tensor:
        """Map ``[-1, 1]``-space samples to the env's action box (clipping first)."""
        u = u.clamp(-1.0, 1.0)
        return self.action_low + (u + 1.0) * 0.5 * (self.action_high - self.action_low)

    def _to_env(self, u: torch.Tensor, flip: torch.Tensor | None) -> torch.Tensor:
        """The env's action for ``u``, drawn in :meth:`canonical`'s frame: reflected back in the
        rows ``flip`` marks (those whose observation lay in the mirrored half)."""
        if flip is not None:
            u = torch.where(flip, self.reflection.act(u), u)
        return self.to_env_action(u)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw ``obs [B, obs_dim]`` -> ``(env_action [B, act_dim], sample u [B, act_dim])``, ``u``
        in :meth:`canonical`'s frame (what the learner stores)."""
        action, u, _ = self.act_and_see(obs, deterministic)
        return action, u

    @torch.no_grad()
    def act_and_see(self, obs: torch.Tensor, deterministic: bool = False, noise: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`act`, and ``canonical(obs)``, the observations as the networks saw them: what a
        rollout stores beside ``u``, the frame found once per step. ``noise``: the standard normal
        draws ``[B, act_dim]`` (default: drawn here from torch's generator)."""
        seen, flip = self._seen(obs)
        mean, std = self.policy(self.obs_rms.normalize(seen))
        if deterministic:
            u = mean
        else:
            u = mean + std * (torch.randn_like(mean) if noise is None else noise)
        return self._to_env(u, flip), u, seen

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic env action for raw observations (what export computes)."""
        seen, flip = self._seen(obs)
        return self._to_env(self.policy.mean(self.obs_rms.normalize(seen)), flip)


def _check_reflection(r: Reflection, obs_dim: int, act_dim: int, low: torch.Tensor, high: torch.Tensor) -> None:
    """``ValueError`` unless ``r`` covers the observation and the action, and the action box is its
    own mirror image (actions are reflected in the policy's [-1, 1] space)."""
    if len(r.obs_index) != obs_dim or len(r.act_index) != act_dim:
        raise ValueError(f"the reflection covers {len(r.obs_index)} observation and {len(r.act_index)} action entries; "
                         f"the task has {obs_dim} and {act_dim}")
    mid = (low + high) / 2
    if not (torch.equal(mid[r.act_index] * r.act_sign, mid) and torch.equal((high - low)[r.act_index], high - low)):
        raise ValueError("the action box is not its own mirror image under the reflection")


def build_agent(cfg: Any, spec: Any) -> ActorCritic:
    """The networks ``cfg`` describes (``hidden_sizes``, ``value_hidden_sizes``, ``activation``,
    ``init_std``, ``state_dependent_std``, ``ortho_init``, ``obs_clip``, ``symmetric``) for the
    task ``spec``: an :class:`~stridelab.envs.EnvSpec` or, from a checkpoint, its dict."""
    fact = spec.get if isinstance(spec, dict) else lambda key: getattr(spec, key, None)
    reflection = None
    if getattr(cfg, "symmetric", False):
        if not fact("reflection"):
            raise ValueError(f"--symmetric: {fact('name')} has no left-right reflection (Go1JoystickFlatTerrain has)")
        reflection = Reflection.from_spec(fact("reflection"))
    return ActorCritic(fact("obs_dim"), fact("act_dim"), fact("action_low"), fact("action_high"),
                       hidden_sizes=cfg.hidden_sizes, value_hidden_sizes=cfg.value_hidden_sizes,
                       activation=cfg.activation, init_std=cfg.init_std, state_dependent_std=cfg.state_dependent_std,
                       ortho_init=cfg.ortho_init, obs_clip=cfg.obs_clip, reflection=reflection)
