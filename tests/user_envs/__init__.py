"""A user's own small continuous-control envs, registered with Gymnasium on import, as a
researcher's package would: ``--env tests.user_envs:PointMass-v0`` imports this module first.

``PointMass-v0`` pushes a point along a line towards a goal: episodes end by leaving the track
(termination) or after 50 steps (truncation). The other ids have the spaces stridelab refuses.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

TIME_LIMIT = 50
TRACK = 2.0  # |x| beyond this ends the episode


class PointMass(gym.Env):
    """A unit mass on a line, pushed by a force in [-1, 1]; reward: minus the distance to ``goal``."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}
    goals_made: list[float] = []  # every instance's goal, so tests see which arguments reached the env

    def __init__(self, goal: float = 0.5, render_mode: str | None = None) -> None:
        self.goal = float(goal)
        PointMass.goals_made.append(self.goal)
        self.render_mode = render_mode
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, (3,), np.float64)
        self._x = self._v = 0.0

    def _obs(self) -> np.ndarray:
        return np.array([self._x, self._v, self.goal])

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._x, self._v = self.np_random.uniform(-0.5, 0.5), 0.0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        assert self.action_space.contains(action), action  # strict, as some users' envs are
        self._v += 0.1 * float(action[0])
        self._x += 0.1 * self._v
        reward = -abs(self._x - self.goal)
        return self._obs(), reward, abs(self._x) > TRACK, False, {}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        frame = np.full((48, 64, 3), 255, dtype=np.uint8)
        col = int(np.clip((self._x + TRACK) / (2 * TRACK) * 63, 0, 63))
        frame[20:28, max(col - 3, 0):col + 4] = (200, 30, 30)
        frame[:, int((self.goal + TRACK) / (2 * TRACK) * 63)] = (30, 30, 200)
        return frame


class MultiDiscretePointMass(PointMass):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.action_space = spaces.MultiDiscrete([3, 3])


class DictObsPointMass(PointMass):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.observation_space = spaces.Dict({"x": spaces.Box(-np.inf, np.inf, (1,)), "goal": spaces.Box(-1, 1, (1,))})


class ImageObsPointMass(PointMass):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.observation_space = spaces.Box(0, 255, (48, 64, 3), np.uint8)


def make_point_mass(render_mode: str | None = None) -> gym.Env:
    """A factory, for ``stridelab.train(env=make_point_mass)``: an env registered nowhere."""
    return PointMass(goal=-0.5, render_mode=render_mode)


def make_point_mass_vector(num_envs: int) -> gym.vector.VectorEnv:
    """A factory of an already vectorized env (it restarts ended envs within the step)."""
    return gym.vector.SyncVectorEnv([lambda: gym.wrappers.TimeLimit(PointMass(goal=-0.5), TIME_LIMIT)] * num_envs,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


gym.register("PointMass-v0", entry_point=PointMass, max_episode_steps=TIME_LIMIT)
gym.register("PointMassMultiDiscrete-v0", entry_point=MultiDiscretePointMass, max_episode_steps=TIME_LIMIT)
gym.register("PointMassDictObs-v0", entry_point=DictObsPointMass, max_episode_steps=TIME_LIMIT)
gym.register("PointMassImageObs-v0", entry_point=ImageObsPointMass, max_episode_steps=TIME_LIMIT)
