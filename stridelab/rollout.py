"""Collect ``T`` steps from ``N`` batched envs, then turn them into a training batch.

Data flow: env.step -> :class:`RolloutStorage` ``[T, N, ...]`` -> :func:`make_batch` (normalizer
update, old policy and values, GAE) -> :class:`Batch` ``[T * N, ...]`` for the update.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from stridelab.envs.base import VecEnv
from stridelab.models import ActorCritic, RunningMeanStd
from stridelab.ops import compute_gae, gaussian_log_prob


class RolloutStorage:
    """Preallocated ``[T, N, ...]`` tensors for one rollout. ``obs`` and ``actions`` are as the
    networks see them (:meth:`ActorCritic.canonical`'s frame); ``final_obs`` is the env's own
    (only the value net reads it, through ``get_value``, which takes it into that frame)."""

    def __init__(self, num_steps: int, num_envs: int, obs_dim: int, act_dim: int, device: torch.device) -> None:
        T, N = num_steps, num_envs
        kw = {"device": device}
        self.obs = torch.zeros(T, N, obs_dim, **kw)
        self.final_obs = torch.zeros(T, N, obs_dim, **kw)
        self.actions = torch.zeros(T, N, act_dim, **kw)
        self.rewards = torch.zeros(T, N, **kw)
        self.terminated = torch.zeros(T, N, dtype=torch.bool, **kw)
        self.dones = torch.zeros(T, N, dtype=torch.bool, **kw)
        self.ep_returns = torch.zeros(T, N, **kw)
        self.ep_lengths = torch.zeros(T, N, dtype=torch.int32, **kw)
        self.env_info: dict[str, float] = {}
        """The env's ``info`` (e.g. per-term reward means, ``reward/<term>``), averaged over the
        rollout's steps; empty for envs without one (and for fused rollouts)."""

    @property
    def num_steps(self) -> int:
        return self.obs.shape[0]

    def all_finite(self) -> bool:
        """Whether every observation and reward of the rollout is a finite number."""
        return bool(torch.isfinite(self.obs).all() and torch.isfinite(self.final_obs).all()
                    and torch.isfinite(self.rewards).all())

    def finished_episodes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns and lengths of the episodes that ended during this rollout (1-D, on CPU)."""
        mask = self.dones
        return self.ep_returns[mask].cpu(), self.ep_lengths[mask].cpu()


def can_fuse(env: VecEnv, agent: ActorCritic) -> bool:
    """Whether ``env`` can run a whole rollout of ``agent`` in one compiled program (Brax).

    An env that could, with a policy the JAX mirror does not know, says so in one warning: the
    step-by-step rollout it falls back to is several times slower.
    """
    if not hasattr(env, "start_rollout"):
        return False
    from stridelab.envs import jax_policy

    why = jax_policy.unsupported(agent)
    if why is not None:
        import warnings

        warnings.warn(f"{why}, so the rollout runs step by step from Python (several times slower than the "
                      f"fused rollout); --no-fused-rollout asks for that and silences this", RuntimeWarning,
                      stacklevel=2)
    return why is None


def collect(env: VecEnv, agent: ActorCritic, obs: torch.Tensor, storage: RolloutStorage, fused_seed: int | None = None
            ) -> torch.Tensor:
    """Run ``T`` steps of the stochastic policy from ``obs [N, obs_dim]``; returns the next obs.

    The normalizer stays frozen during the rollout, so every step sees the same statistics.
    With ``fused_seed`` (envs for which :func:`can_fuse` holds) the ``T`` steps run as one
    compiled program, the policy's noise drawn from that seed; otherwise step by step from Python.
    """
    return start_collect(env, agent, obs, storage, fused_seed)()


def start_collect(env: VecEnv, agent: ActorCritic, obs: torch.Tensor, storage: RolloutStorage,
                  fused_seed: int | None = None, background: bool = False) -> Callable[[], torch.Tensor]:
    """:func:`collect`, split in two: returns a function that finishes it and returns the next obs.

    A fused rollout is only dispatched here and runs in the simulator's runtime while the caller
    goes on (fitting the critic, which the rollout does not use); ``storage`` is filled when the
    returned function is called. Until then the policy and the normalizer must not change.
    Step by step, the rollout runs on a thread of its own with ``background`` (an env whose
    physics releases the GIL, :func:`steps_in_background`), and is otherwise done before this
    returns. The policy's noise is drawn here, from torch's generator, so the stream is the same
    either way. Calling the function again returns the same next obs without waiting or copying.
    """
    if fused_seed is None:
        noise = policy_noise(storage)
        if background:
            return _in_thread(lambda: _collect_stepwise(env, agent, obs, storage, noise))
        next_obs = _collect_stepwise(env, agent, obs, storage, noise)
        return lambda: next_obs
    pending = env.start_rollout(agent, storage.num_steps, fused_seed)
    done: list[torch.Tensor] = []

    @torch.no_grad()
    def finish() -> torch.Tensor:
        if done:
            return done[0]
        r = pending()
        storage.obs.copy_(r["obs"])
        storage.actions.copy_(r["u"])
        storage.rewards.copy_(r["reward"])
        storage.terminated.copy_(r["terminated"])
        torch.logical_or(r["terminated"], r["truncated"], out=storage.dones)
        storage.final_obs.copy_(r["final_obs"])
        storage.ep_returns.copy_(r["episode_return"])
        storage.ep_lengths.copy_(r["episode_length"])
        done.append(r["next_obs"])
        return done[0]

    return finish


def steps_in_background(env: VecEnv) -> bool:
    """Whether ``env``'s step-by-step rollout gains from a thread of its own beside the critic's
    fit: its physics runs in C with the GIL released (``background_rollout``, native MuJoCo's),
    so the core the rollout's Python leaves idle fits the critic."""
    return bool(getattr(env, "background_rollout", False))


def _in_thread(work: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """Start ``work`` on a new thread; returns a function that waits for its result (raising
    what it raised), the same result on every call."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as err:  # re-raised in the caller's thread by finish()
            outcome["error"] = err

    thread = threading.Thread(target=run, name="stridelab-rollout", daemon=True)
    thread.start()

    def finish() -> torch.Tensor:
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    return finish


def policy_noise(storage: RolloutStorage) -> list[torch.Tensor]:
    """The rollout's standard normal draws, ``[N, act_dim]`` per step: the same calls, in the
    same order, as drawing at each step (a single ``[T, N, act_dim]`` draw is not the same stream)."""
    shape, device = storage.actions.shape[1:], storage.actions.device
    return [torch.randn(shape, device=device) for _ in range(storage.num_steps)]


@torch.no_grad()
def _collect_stepwise(env: VecEnv, agent: ActorCritic, obs: torch.Tensor, storage: RolloutStorage,
                      noise: list[torch.Tensor]) -> torch.Tensor:
    with torch_threads(getattr(env, "policy_threads", None) if obs.device.type == "cpu" else None):
        return _step_by_step(env, agent, obs, storage, noise)


def _step_by_step(env: VecEnv, agent: ActorCritic, obs: torch.Tensor, storage: RolloutStorage,
                  noise: list[torch.Tensor]) -> torch.Tensor:
    info: dict[str, float] = {}
    for t in range(storage.num_steps):
        action, u, seen = agent.act_and_see(obs, noise=noise[t])
        # Before the step (the env may reuse the buffer ``obs`` views), as the networks see it
        # (``u``'s frame: a symmetric policy's canonical half, ActorCritic.canonical).
        storage.obs[t] = seen
        storage.actions[t] = u
        res = env.step(action)
        storage.rewards[t] = res.reward
        storage.terminated[t] = res.terminated
        storage.dones[t] = res.done
        storage.final_obs[t] = res.final_obs
        storage.ep_returns[t] = res.episode_return
        storage.ep_lengths[t] = res.episode_length
        for key, value in getattr(env, "info", {}).items():  # means over the batch, this step
            info[key] = info.get(key, 0.0) + value
        obs = res.obs
    storage.env_info = {key: total / storage.num_steps for key, total in info.items()}
    return obs


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block on ``n`` of torch's CPU threads (at most as many as it has; ``None``: as it is).

    An env stepping its batch on threads of its own (native MuJoCo's, every core) names
    ``policy_threads = 1``: torch's OpenMP workers keep spinning for a while after each of the
    policy's kernels, on the cores the physics runs on next, and the policy's few small matrix
    products gain little from a second thread (docs/benchmarks.md, "Native MuJoCo simulator").
    The same computation at any thread count (bit for bit with this machine's torch build;
    ``--torch-threads N`` runs repeat either way)."""
    before = torch.get_num_threads()
    if n is None or n >= before:
        yield
        return
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def fewer_threads(active: bool) -> Iterator[None]:
    """Run the block on half of torch's CPU threads when ``active``: the other half's cores are
    left to a rollout running beside it (:func:`start_collect`)."""
    n = torch.get_num_threads()
    if not active or n < 2:
        yield
        return
    torch.set_num_threads(n // 2)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@dataclass
class Batch:
    """Flattened training batch, ``B = T * N`` samples."""

    obs: torch.Tensor  # [B, obs_dim] observations as the networks see them (ActorCritic.canonical: raw unless --symmetric)
    actions: torch.Tensor  # [B, act_dim] unclipped policy samples
    logp_old: torch.Tensor  # [B]
    mean_old: torch.Tensor  # [B, act_dim]
    std_old: torch.Tensor  # [B, act_dim]
    values_old: torch.Tensor  # [B]
    advantages: torch.Tensor  # [B]
    returns: torch.Tensor  # [B]

    def __len__(self) -> int:
        return self.obs.shape[0]

    def index(self, idx: torch.Tensor) -> Batch:
        return Batch(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


class ReturnNormalizer(torch.nn.Module):
    """Divide rewards by a running std of the discounted return, for learning only.

    The scaling of Gymnasium's ``NormalizeReward`` and SB3's ``VecNormalize(norm_reward=True)``:
    each env keeps its discounted return ``G = gamma * G + r`` (restarted when its episode
    ends), every ``G`` is merged into a running variance, and rewards are divided by its square
    root, then clipped to ``[-clip, clip]``. Logged episode returns stay the task's own.
    """

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, epsilon: float = 1e-8, comm: Any = None) -> None:
        super().__init__()
        self.comm = comm
        self.rms = RunningMeanStd(())
        self.register_buffer("ret", torch.zeros(num_envs, dtype=torch.float64))
        self.gamma, self.clip, self.epsilon = gamma, clip, epsilon

    def load_statistics(self, state: dict[str, Any], path: Any) -> None:
        """The running std from a saved ``state_dict()``; the per-env returns restart with the envs."""
        from stridelab.checkpoint import load_weights

        load_weights(self.rms, {k.removeprefix("rms."): v for k, v in state.items() if k.startswith("rms.")}, path)

    @torch.no_grad()
    def forward(self, rewards: torch.Tensor, dones: torch.Tensor) -> torch.Tensor:
        """``rewards, dones [T, N]`` of one rollout -> scaled rewards ``[T, N]``."""
        returns = torch.empty(rewards.shape, dtype=torch.float64, device=rewards.device)
        ret = self.ret
        for t in range(rewards.shape[0]):
            ret = ret * self.gamma + rewards[t].double()
            returns[t] = ret
            ret = torch.where(dones[t], torch.zeros_like(ret), ret)
        self.ret.copy_(ret)
        self.rms.update(returns.reshape(-1), self.comm)
        scale = torch.sqrt(self.rms.var + self.epsilon).to(rewards.dtype)
        return (rewards / scale).clamp(-self.clip, self.clip)


@torch.no_grad()
def learning_rewards(storage: RolloutStorage, reward_norm: ReturnNormalizer | None, clip: float) -> torch.Tensor:
    """The rewards the learner sees ``[T, N]``: the rollout's, divided by the running std of the
    discounted return (``reward_norm``, which also advances its statistics), then clipped to
    ``[-clip, clip]`` (``clip`` 0: not clipped). The logged episode returns stay the task's own."""
    rewards = storage.rewards if reward_norm is None else reward_norm(storage.rewards, storage.dones)
    return rewards.clamp(-clip, clip) if clip > 0 else rewards


@torch.no_grad()
def make_batch(agent: ActorCritic, storage: RolloutStorage, gamma: float, gae_lambda: float, reward_scale: float = 1.0,
               update_normalizer: bool = True, rewards: torch.Tensor | None = None, comm: Any = None) -> Batch:
    """Merge the rollout into the normalizer, then compute the old policy, values and GAE.

    The old policy's log-probs and values are recomputed with the updated normalizer, so the
    first PPO epoch starts at ratio 1 exactly. ``rewards [T, N]`` replaces the stored rewards
    (e.g. scaled by a :class:`ReturnNormalizer`); ``reward_scale`` multiplies either.
    """
    T, N, obs_dim = storage.obs.shape
    obs = storage.obs.reshape(T * N, obs_dim)
    if update_normalizer:
        agent.obs_rms.update(obs, comm)  # with data-parallel processes: the union of their batches
    mean, std = agent.dist_params(obs)
    actions = storage.actions.reshape(T * N, -1)
    values = agent.get_value(obs)
    # V of the observation each step reached: where the episode goes on that is the next step's
    # observation, whose value is known (StepResult.final_obs); the value net sees only the last
    # step's and the ended episodes' final observations (a sixteenth of the batch, not all of it).
    next_values = torch.empty(T, N, dtype=values.dtype, device=values.device)
    next_values[:-1] = values.reshape(T, N)[1:]
    reached = storage.dones.clone()
    reached[-1] = True
    next_values[reached] = agent.get_value(storage.final_obs[reached])
    adv, ret = compute_gae(
        (storage.rewards if rewards is None else rewards) * reward_scale,
        values.reshape(T, N),
        next_values,
        storage.terminated,
        storage.dones,
        gamma,
        gae_lambda,
    )
    return Batch(
        obs=obs,
        actions=actions,
        logp_old=gaussian_log_prob(mean, std, actions),
        mean_old=mean,
        std_old=std,
        values_old=values,
        advantages=adv.reshape(-1),
        returns=ret.reshape(-1),
    )
