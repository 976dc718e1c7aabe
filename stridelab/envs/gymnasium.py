"""Gymnasium's MuJoCo v5 tasks behind the :class:`~stridelab.envs.base.VecEnv` interface.

These are the tasks TRPO and PPO results are published on (Hopper-v5, HalfCheetah-v5, ...).
Gymnasium's own ``SyncVectorEnv`` steps the copies (one process: ``compare`` already runs one
training per core, so subprocess workers would only fight over the same cores), in
``SAME_STEP`` auto-reset mode: an env that ends restarts within the same step, and Gymnasium
hands back the true last observation in ``info["final_obs"]``. Each copy is seeded apart
(``seed + i``) and restarts from a fresh random state drawn by its own generator.

Episode returns are summed here from the raw rewards, so they are the task's own returns
whatever the learner does to rewards afterwards.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
import torch

from stridelab.envs.base import EnvSpec, StepResult

# The MuJoCo tasks published TRPO/PPO results use; Gymnasium registers them all as "<Name>-v5".
MUJOCO_TASKS = (
    "Ant", "HalfCheetah", "Hopper", "Humanoid", "HumanoidStandup", "InvertedDoublePendulum",
    "InvertedPendulum", "Pusher", "Reacher", "Swimmer", "Walker2d",
)


PRESET_TABLE = "gymnasium"
CONTRACT_TASK = "Hopper-v5"  # a task that ends both ways within 100 random steps (tests/test_vecenv_contract.py)


def env_names() -> list[str]:
    return [f"{task}-v5" for task in MUJOCO_TASKS]


def _quiet_make_vec(name: str, num_envs: int, **kwargs: Any) -> Any:
    import gymnasium as gym

    if sys.platform.startswith("linux"):
        os.environ.setdefault("MUJOCO_GL", "egl")
    return gym.make_vec(
        name,
        num_envs=num_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
        **kwargs,
    )


class GymnasiumVecEnv:
    """``num_envs`` copies of a Gymnasium MuJoCo task, stepped in this process.

    Args:
        name: a Gymnasium id, e.g. ``Hopper-v5`` (see :func:`env_names`).
        num_envs: batch size ``N``.
        episode_length: time limit in steps; reaching it is a truncation.
        device: torch device the tensors are handed to.
        render_size: ``(width, height)`` to keep a renderer for RGB frames (:meth:`render`).
    """

    def __init__(self, name: str, num_envs: int, episode_length: int = 1000,
                 device: torch.device | str = "cpu", render_size: tuple[int, int] | None = None,
                 **env_kwargs: Any) -> None:
        kwargs: dict[str, Any] = {"max_episode_steps": int(episode_length), **env_kwargs}
        if render_size is not None:
            kwargs.update(render_mode="rgb_array", width=int(render_size[0]), height=int(render_size[1]))
        self._env = _quiet_make_vec(name, int(num_envs), **kwargs)
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        single = self._env.envs[0]
        space = single.action_space
        self.spec = EnvSpec(
            name=name,
            simulator="gymnasium",
            obs_dim=int(np.prod(single.observation_space.shape)),
            act_dim=int(np.prod(space.shape)),
            action_low=tuple(float(x) for x in space.low),
            action_high=tuple(float(x) for x in space.high),
            dt=float(single.unwrapped.dt),
            episode_length=int(episode_length),
        )
        self._ep_return = np.zeros(self.num_envs, dtype=np.float64)
        self._ep_length = np.zeros(self.num_envs, dtype=np.int32)
        self._started = False

    def _to_torch(self, x: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.as_tensor(x, dtype=dtype).to(self.device)

    def reset(self, seed: int) -> torch.Tensor:
        obs, _ = self._env.reset(seed=int(seed))
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        self._started = True
        return self._to_torch(obs.reshape(self.num_envs, -1))

    def step(self, action: torch.Tensor) -> StepResult:
        if not self._started:
            raise RuntimeError("call reset(seed) before step()")
        act = action.detach().to("cpu", torch.float64).numpy().reshape(self.num_envs, -1)
        obs, reward, terminated, truncated, info = self._env.step(act)
        obs = obs.reshape(self.num_envs, -1)
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
        """RGB frame ``[H, W, 3]`` of the first env (needs ``render_size``)."""
        return self._env.envs[0].render()

    def close(self) -> None:
        self._env.close()


def validate(cfg: Any) -> None:
    """Gymnasium's tasks have no settings of their own (``--backend`` is Brax's, ignored here)."""


def make_vec_env(name: str, num_envs: int, device: torch.device | str = "cpu", episode_length: int = 1000,
                 backend: str | None = None, shards: int | str = "auto") -> GymnasiumVecEnv:
    return GymnasiumVecEnv(name, num_envs, episode_length=episode_length, device=device)
