"""Gymnasium envs behind the :class:`~stridelab.envs.base.VecEnv` interface.

Any registered Gymnasium id with a continuous (``Box``) action space and a flat observation:
the MuJoCo v5 tasks TRPO and PPO results are published on (Hopper-v5, HalfCheetah-v5, ...:
:func:`env_names`, the ones ``stridelab envs`` lists), ``LunarLanderContinuous-v3`` and
``BipedalWalker-v3`` where Box2D is installed, and a user's own (``module:EnvId`` imports the
module that registers it first: :mod:`stridelab.envs.registry` does that), with arguments for
its constructor (``--env-kwargs``, :mod:`stridelab.envs.arguments`); and Python factories
(:mod:`stridelab.envs.factories`). :func:`validate` makes one env before a run starts, so an env
that cannot be made or has spaces stridelab cannot train is one line before anything is written.

Gymnasium's own ``SyncVectorEnv`` steps the copies (one process: ``compare`` already runs one
training per core, so subprocess workers would only fight over the same cores), in
``SAME_STEP`` auto-reset mode: an env that ends restarts within the same step, and Gymnasium
hands back the true last observation in ``info["final_obs"]``. Each copy is seeded apart
(``seed + i``) and restarts from a fresh random state drawn by its own generator.

Episode returns are summed here from the raw rewards, so they are the task's own returns
whatever the learner does to rewards afterwards.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np
import torch

from stridelab.envs import factories
from stridelab.envs.arguments import call_kwargs, check_recordable
from stridelab.envs.base import EnvSpec, StepResult
from stridelab.envs.model_warnings import mujoco_warnings

# The MuJoCo tasks published TRPO/PPO results use; Gymnasium registers them all as "<Name>-v5".
MUJOCO_TASKS = (
    "Ant", "HalfCheetah", "Hopper", "Humanoid", "HumanoidStandup", "InvertedDoublePendulum",
    "InvertedPendulum", "Pusher", "Reacher", "Swimmer", "Walker2d",
)


PRESET_TABLE = "gymnasium"
CONTRACT_TASK = "Hopper-v5"  # a task that ends both ways within 100 random steps (tests/test_vecenv_contract.py)
ENV_KWARGS = True  # make_vec_env takes env_kwargs (--env-kwargs): gymnasium.make's keyword arguments


def env_names() -> list[str]:
    """The tasks ``stridelab envs`` lists (known to work, most with presets); :func:`offers` says
    which names are accepted."""
    return [f"{task}-v5" for task in MUJOCO_TASKS]


def _gym() -> Any:
    """``gymnasium``, with MuJoCo's renderer on headless EGL unless the user chose another."""
    if sys.platform.startswith("linux"):
        os.environ.setdefault("MUJOCO_GL", "egl")
    import gymnasium

    return gymnasium


def offers(name: str) -> bool:
    """Whether ``name`` is a Gymnasium id registered in this process, or a factory handed to it.
    (Whether stridelab can train it is :func:`validate`'s to say, naming what is wrong.)"""
    if factories.is_factory_name(name):
        return factories.registered(name)
    return name in _gym().registry


def registered_ids() -> list[str]:
    """Every id Gymnasium has registered in this process (for "did you mean")."""
    return list(_gym().registry)


def task_defaults(name: str) -> dict[str, Any]:
    """Settings the env's registration gives, between the ``[gymnasium]`` presets and its own
    table: its time limit (``max_episode_steps``: 100 for Pusher-v5, 1,600 for BipedalWalker-v3)."""
    spec = None if factories.is_factory_name(name) else _gym().registry.get(name)
    limit = getattr(spec, "max_episode_steps", None)
    return {"episode_length": int(limit)} if limit else {}


def validate(cfg: Any) -> None:
    """The env of ``cfg`` can be made with ``cfg.env_kwargs`` and trained (:func:`probe`)."""
    check_recordable(cfg.env_kwargs)
    probe(cfg.env, cfg.env_kwargs)


_probed: set[str] = set()


def probe(name: str, env_kwargs: dict[str, Any] | None = None) -> None:
    """Make one env of ``name`` and check what stridelab needs of it (:func:`check_spaces`);
    ``ValueError``, one line, when it cannot be made (an argument it rejects, a dependency not
    installed) or trained. Done once per process for each env and its arguments."""
    key = json.dumps([name, env_kwargs or {}, id(factories.get(name)) if factories.is_factory_name(name) else 0],
                     sort_keys=True, default=repr)
    if key in _probed:
        return
    vector = _probe_vector(name, env_kwargs)
    try:
        check_spaces(name, vector.single_action_space, vector.single_observation_space)
    finally:
        vector.close()
    _probed.add(key)


def _probe_vector(name: str, env_kwargs: dict[str, Any] | None) -> Any:
    """One env of ``name`` as a vector env; the env's own errors as one ``ValueError`` line."""
    try:
        with mujoco_warnings():
            return _make_vector(name, 1, 2, None, env_kwargs, check_env=False)
    except factories.FactoryError:
        raise
    except Exception as e:  # noqa: BLE001 - a user's env may raise anything: its message is what helps
        raise ValueError(_not_made(name, env_kwargs, e)) from None


def _not_made(name: str, env_kwargs: dict[str, Any] | None, error: Exception) -> str:
    cause = f"{type(error).__name__}: {error}"
    if factories.is_factory_name(name):
        return f"{factories.short_name(name)}() failed to make the env ({cause})"
    if env_kwargs and isinstance(error, TypeError):
        pairs = " ".join(f"{k}={v!r}" for k, v in env_kwargs.items())
        return f"--env-kwargs {pairs}: {name} rejected its arguments ({cause})"
    with_args = " with --env-kwargs " + " ".join(f"{k}={v!r}" for k, v in env_kwargs.items()) if env_kwargs else ""
    return f"Gymnasium could not make {name!r}{with_args} ({cause})"


def check_spaces(name: str, action_space: Any, observation_space: Any) -> None:
    """``ValueError`` naming the space when stridelab cannot train it: actions must be a bounded
    ``Box`` (the policy is a Gaussian squashed into the Box's range), observations one ``Box``
    that is not an image (the networks are MLPs over a flat vector)."""
    from gymnasium import spaces

    if not isinstance(action_space, spaces.Box):
        raise ValueError(f"{name}'s action space is {action_space}: stridelab trains continuous actions only (a "
                         f"gymnasium.spaces.Box); discrete and multi-discrete actions are not supported")
    if not (np.isfinite(action_space.low).all() and np.isfinite(action_space.high).all()):
        raise ValueError(f"{name}'s action space {action_space} is unbounded: the policy acts within the Box's "
                         f"low and high, which must be finite")
    if not isinstance(observation_space, spaces.Box):
        flatten = isinstance(observation_space, (spaces.Dict, spaces.Tuple))
        hint = "; gymnasium.wrappers.FlattenObservation makes it one (in a factory)" if flatten else ""
        raise ValueError(f"{name}'s observation space is {observation_space}: stridelab's policies read one flat "
                         f"vector of numbers (a Box){hint}")
    shape = observation_space.shape
    if len(shape) >= 3 or (len(shape) == 2 and observation_space.dtype == np.uint8):
        raise ValueError(f"{name}'s observation is an image ({observation_space}): stridelab's policies are MLPs "
                         f"over a flat vector of features and have no convolutional encoder")


def _make_vector(name: str, num_envs: int, episode_length: int, render_size: tuple[int, int] | None,
                 env_kwargs: dict[str, Any] | None, check_env: bool = True) -> Any:
    """``num_envs`` envs of ``name`` as one Gymnasium vector env in ``SAME_STEP`` auto-reset
    mode, ending episodes at ``episode_length`` steps, rendering RGB frames with ``render_size``."""
    if factories.is_factory_name(name):
        return factories.make_vector(name, num_envs, episode_length, "rgb_array" if render_size else None)
    gym = _gym()
    kwargs = {"max_episode_steps": int(episode_length), **call_kwargs(env_kwargs)}
    if render_size is not None:
        kwargs.update(_render_kwargs(name, render_size))
    if not check_env:  # the probe's: a bad space is our one line, not also Gymnasium's checker's warnings
        kwargs["disable_env_checker"] = True
    return gym.make_vec(name, num_envs=num_envs, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}, **kwargs)


def _render_kwargs(name: str, render_size: tuple[int, int]) -> dict[str, Any]:
    """RGB frames, at ``render_size`` where the env takes a size (MuJoCo's ``width``, ``height``);
    the others render at their own size (resized by :meth:`GymnasiumVecEnv.render`)."""
    from gymnasium.envs.registration import load_env_creator

    entry = _gym().spec(name).entry_point
    creator = entry if callable(entry) else load_env_creator(entry)
    size = {"width": int(render_size[0]), "height": int(render_size[1])}
    return {"render_mode": "rgb_array", **(size if factories.takes(creator, "width") else {})}


class GymnasiumVecEnv:
    """``num_envs`` copies of a Gymnasium env, stepped in this process.

    Args:
        name: a Gymnasium id, e.g. ``Hopper-v5``, or a factory's name (:mod:`stridelab.envs.factories`).
        num_envs: batch size ``N``.
        episode_length: time limit in steps; reaching it is a truncation.
        device: torch device the tensors are handed to.
        render_size: ``(width, height)`` to keep a renderer for RGB frames (:meth:`render`).
        env_kwargs: keyword arguments for the env's constructor (``gymnasium.make``'s).
    """

    def __init__(self, name: str, num_envs: int, episode_length: int = 1000,
                 device: torch.device | str = "cpu", render_size: tuple[int, int] | None = None,
                 env_kwargs: dict[str, Any] | None = None) -> None:
        with mujoco_warnings():
            self._env = _make_vector(name, int(num_envs), int(episode_length), render_size, env_kwargs)
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        self._render_size = render_size
        action, observation = self._env.single_action_space, self._env.single_observation_space
        check_spaces(name, action, observation)
        self._action = action
        self.spec = EnvSpec(
            name=name,
            simulator="gymnasium",
            obs_dim=int(np.prod(observation.shape)),
            act_dim=int(np.prod(action.shape)),
            action_low=tuple(float(x) for x in action.low.reshape(-1)),
            action_high=tuple(float(x) for x in action.high.reshape(-1)),
            dt=_step_seconds(self._env),
            episode_length=int(episode_length),
        )
        self._ep_return = np.zeros(self.num_envs, dtype=np.float64)
        self._ep_length = np.zeros(self.num_envs, dtype=np.int32)
        self._started = False

    def _to_torch(self, x: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=dtype).to(self.device)

    def reset(self, seed: int) -> torch.Tensor:
        obs, _ = self._env.reset(seed=int(seed))
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        self._started = True
        return self._to_torch(np.asarray(obs).reshape(self.num_envs, -1))

    def _env_action(self, action: torch.Tensor) -> np.ndarray:
        """``[N, act_dim]`` actions as the env's Box holds them: its shape and dtype, within its
        bounds (the policy's are, but float rounding may step an ulp past a strict env's check)."""
        space = self._action
        act = action.detach().to("cpu", torch.float64).numpy().reshape(self.num_envs, *space.shape)
        return np.clip(act, space.low, space.high).astype(space.dtype, copy=False)

    def step(self, action: torch.Tensor) -> StepResult:
        if not self._started:
            raise RuntimeError("call reset(seed) before step()")
        obs, reward, terminated, truncated, info = self._env.step(self._env_action(action))
        obs = np.asarray(obs).reshape(self.num_envs, -1)
        terminated, truncated = np.asarray(terminated, dtype=bool), np.asarray(truncated, dtype=bool)
        done = terminated | truncated
        self._ep_return += reward
        self._ep_length += 1
        ep_return, ep_length = self._ep_return.copy(), self._ep_length.copy()
        final_obs = obs
        if done.any():
            final_obs = obs.copy()
            ended = info["_final_obs"]
            final_obs[ended] = np.stack(info["final_obs"][ended]).reshape(int(ended.sum()), -1)
            self._ep_return[done] = 0.0
            self._ep_length[done] = 0
        return StepResult(
            obs=self._to_torch(obs),
            reward=self._to_torch(reward),
            terminated=self._to_torch(terminated, torch.bool),
            truncated=self._to_torch(truncated & ~terminated, torch.bool),
            final_obs=self._to_torch(final_obs),
            episode_return=self._to_torch(ep_return),
            episode_length=self._to_torch(ep_length, torch.int32),
        )

    def render(self) -> np.ndarray:
        """RGB frame ``[H, W, 3]`` of the first env at ``render_size`` (needs ``render_size``)."""
        envs = getattr(self._env, "envs", None)
        frame = envs[0].render() if envs else _first(self._env.render())
        if frame is None:
            raise ValueError(f"{self.spec.name} renders no frames (its render_mode is not 'rgb_array'; a factory "
                             f"gets render_mode='rgb_array' when it takes a render_mode argument)")
        return _resized(np.asarray(frame)[..., :3], self._render_size)

    def close(self) -> None:
        self._env.close()


def _first(frames: Any) -> Any:
    """A vector env's first env's frame (``render`` gives one per env, or ``None``)."""
    return None if frames is None else frames[0]


def _resized(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """``frame`` at ``size`` (width, height): an env that renders at its own size still gives the
    video the frames asked for."""
    if size is None or frame.shape[:2] == (size[1], size[0]):
        return frame
    from PIL import Image

    return np.asarray(Image.fromarray(frame.astype(np.uint8)).resize(tuple(size), Image.BILINEAR))


def _step_seconds(vector: Any) -> float:
    """Seconds of simulated time per env step: MuJoCo's ``dt``, else ``1 / render_fps`` (the
    rate the env is meant to be watched at), else 1/30 s."""
    envs = getattr(vector, "envs", None)
    dt = getattr(envs[0].unwrapped, "dt", None) if envs else None
    if dt:
        return float(dt)
    fps = vector.metadata.get("render_fps") or (envs[0].metadata.get("render_fps") if envs else None)
    return 1.0 / float(fps) if fps else 1.0 / 30.0


def make_vec_env(name: str, num_envs: int, device: torch.device | str = "cpu", episode_length: int = 1000,
                 backend: str | None = None, shards: int | str = "auto",
                 env_kwargs: dict[str, Any] | None = None) -> GymnasiumVecEnv:
    return GymnasiumVecEnv(name, num_envs, episode_length=episode_length, device=device, env_kwargs=env_kwargs)
