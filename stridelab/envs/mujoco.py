"""Native MuJoCo, batched on the CPU: ``N`` copies of one model stepped by MuJoCo's C library.

Three layers, so that a second robot task reuses the first two:

* :class:`BatchedSim` steps the physics. It holds the ``N`` envs as rows of one
  ``mujoco.batch.Batch`` (MuJoCo's own thread pool: each env's state is one row, a call runs
  every row's substeps in C on ``threads`` threads with the GIL released, bit-identical to a
  loop of ``mj_step`` at any thread count). Tasks read and write ``[N, ...]`` numpy views of
  the state (``qpos``, ``qvel``, ``ctrl``) and of the sensors, and give envs their own model
  parameters (:meth:`BatchedSim.expand`) for domain randomization. Everything a task needs is a
  sensor added to the model (MjSpec), so it comes out of the C step; nothing loops over envs in
  Python. ``mujoco.rollout`` and a thread pool over slices were measured against it
  (benchmarks/mujoco_throughput.py, docs/benchmarks.md).
* A task (:class:`Task`; :mod:`stridelab.envs.go1`) builds the model and turns actions into
  controls, sensors into observations, rewards and terminations, all vectorized over the batch.
* :class:`MujocoVecEnv` is the :class:`~stridelab.envs.base.VecEnv`: the time limit, same-step
  auto-reset with the true final observation, episode statistics and torch tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import mujoco
import numpy as np
import torch
from mujoco import batch as mj_batch

from stridelab.cores import affinity
from stridelab.envs.arguments import call_kwargs, check_recordable
from stridelab.envs.base import EnvSpec, StepResult
from stridelab.envs.go1 import Go1Joystick, Randomization

PRESET_TABLE = "mujoco"
TASK_OPTIONS = ("randomization",)  # what make_vec_env hands its tasks (the registry refuses them elsewhere)
ENV_KWARGS = True  # make_vec_env takes env_kwargs (--env-kwargs): the task's settings (Go1Config's fields)
# Ends both ways within 100 random steps (tests/test_vecenv_contract.py): under random joint
# targets the Go1 stumbles until its trunk meets the floor, often within a few dozen steps.
CONTRACT_TASK = "Go1JoystickFlatTerrain"

# MuJoCo's warnings for a state that blew up; the engine then resets that simulation by itself.
_BAD_STATE = [int(w) for w in (mujoco.mjtWarning.mjWARN_BADQPOS, mujoco.mjtWarning.mjWARN_BADQVEL,
                               mujoco.mjtWarning.mjWARN_BADQACC)]


# Task name -> factory (keyword arguments: the task's own options, e.g. ``randomization``, and
# ``env_kwargs``, its settings; ``factory.check_env_kwargs(env_kwargs)`` checks those alone).
TASKS: dict[str, Callable[..., Task]] = {"Go1JoystickFlatTerrain": Go1Joystick}


def env_names() -> list[str]:
    return list(TASKS)


class BatchedSim:
    """``num_envs`` copies of ``model``, one ``mujoco.batch.Batch`` row each, on ``threads`` threads.

    ``qpos [N, nq]``, ``qvel [N, nv]``, ``ctrl [N, nu]`` are writable views of the state rows (a
    write is that env's state at the next call); :meth:`sensor` views ``sensordata``, which every
    call refreshes. After :meth:`step` the position- and velocity-dependent sensors describe the
    new state (``mjSTAGE_VEL``); acceleration-dependent ones (actuator forces) the last substep.
    """

    def __init__(self, model: mujoco.MjModel, num_envs: int, threads: int) -> None:
        self.model, self.num_envs, self.threads = model, int(num_envs), int(threads)
        self.batch = mj_batch.Batch(model, self.num_envs, self.threads)
        self.qpos, self.qvel, self.ctrl = (self.batch.bind(f) for f in ("qpos", "qvel", "ctrl"))
        self.sensordata = self.batch.bind("sensordata")  # bound before any call, so it is refreshed
        self._bad = self._bad_state_count()

    def sensor(self, name: str) -> np.ndarray:
        """``[N, dim]`` live view of sensor ``name``'s readings."""
        s = self.model.sensor(name)
        start = int(s.adr[0])
        return self.sensordata[:, start:start + int(s.dim[0])]

    def step(self, substeps: int) -> np.ndarray:
        """Advance every env by ``substeps`` physics steps under the controls in ``ctrl``.
        Returns ``[N]`` bool: the envs whose state blew up (MuJoCo restarted them from the model's
        defaults, so their readings belong to no episode)."""
        self.batch.step(nstep=int(substeps), stage=mujoco.mjtStage.mjSTAGE_VEL)
        bad = self._bad_state_count()
        unstable, self._bad = bad > self._bad, bad
        return unstable

    def reset(self, ids: np.ndarray, keyframe: int) -> None:
        """Put envs ``ids`` at ``keyframe``; edit their state, then call :meth:`forward`."""
        self.batch.reset(ids, keyframe=keyframe, stage=mujoco.mjtStage.mjSTAGE_NONE)
        self._bad[ids] = self._bad_state_count()[ids]

    def forward(self, ids: np.ndarray) -> None:
        """Recompute envs ``ids``' sensors from their state (after a reset or an edit)."""
        self.batch.forward(ids)

    def expand(self, field: str) -> np.ndarray:
        """``[N, ...]`` writable per-env values of model field ``field`` (``geom_friction``, ...)."""
        return self.batch.expand(field)

    def set_const(self, ids: np.ndarray) -> None:
        """Recompute the constants MuJoCo derives from masses and inertias, after editing them."""
        self.batch.set_const(ids)

    def _bad_state_count(self) -> np.ndarray:
        return self.batch.warning[:, _BAD_STATE, 0].sum(axis=1)


class Task(Protocol):
    """What :class:`MujocoVecEnv` asks of a task; arrays are numpy, batched over ``N`` envs. A
    task with a left-right symmetry may also have ``reflection() -> dict`` (:class:`EnvSpec`'s)."""

    name: str
    model: mujoco.MjModel
    substeps: int
    """Physics steps per env step."""
    ctrl_dt: float
    """Seconds per env step."""
    obs_dim: int
    act_dim: int
    info: dict[str, float]
    """Means over the batch of the last step's parts (reward terms, ...), for logging."""
    video_script: tuple[tuple[float, tuple[float, ...], str], ...]
    """What ``stridelab video`` shows: ``(seconds, command, caption)`` held one after the other."""

    def hold_commands(self, command: np.ndarray | None) -> None:
        """Every env follows ``command`` from now on, never redrawn; ``None`` draws them again."""

    def reset(self, sim: BatchedSim, ids: np.ndarray, rng: np.random.Generator) -> None:
        """Start envs ``ids`` afresh (state, commands, randomized parameters)."""

    def act(self, sim: BatchedSim, action: np.ndarray, rng: np.random.Generator) -> None:
        """Turn ``[N, act_dim]`` actions in ``[-1, 1]`` into ``sim.ctrl`` before the physics."""

    def evaluate(self, sim: BatchedSim, action: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """After the physics: ``(reward [N], terminated [N] bool)``; advances the task's state."""

    def observe(self, sim: BatchedSim, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``[len(ids), obs_dim]`` float32 observations of envs ``ids``."""


class MujocoVecEnv:
    """``num_envs`` copies of ``task`` stepped by :class:`BatchedSim`, handing torch tensors on ``device``.

    Args:
        task: the task (:data:`TASKS` builds them by name); it keeps this env's per-env state,
            so it belongs to one env.
        num_envs: batch size ``N``.
        episode_length: time limit in env steps; reaching it is a truncation.
        device: torch device the tensors are handed to.
        threads: threads stepping the batch (``auto``: every core this process may use).
    """

    background_rollout = True
    """The rollout may run on a thread beside the critic's fit (:func:`stridelab.rollout.steps_in_background`):
    the physics runs in C with the GIL released, and the core the rollout's Python leaves idle fits the critic."""

    policy_threads = 1
    """torch threads for the policy between steps (:func:`stridelab.rollout.torch_threads`): the
    physics runs on every core on the batch's own threads, which torch's spinning workers would slow."""

    def __init__(self, task: Task, num_envs: int, episode_length: int = 1000, device: torch.device | str = "cpu",
                 threads: int | str = "auto") -> None:
        self.task, self.num_envs, self.device = task, int(num_envs), torch.device(device)
        self.sim = BatchedSim(task.model, self.num_envs, plan_threads(threads, self.num_envs))
        self.spec = EnvSpec(name=task.name, simulator="mujoco", obs_dim=task.obs_dim, act_dim=task.act_dim,
                            action_low=(-1.0,) * task.act_dim, action_high=(1.0,) * task.act_dim,
                            dt=task.ctrl_dt, episode_length=int(episode_length),
                            reflection=task.reflection() if hasattr(task, "reflection") else None)
        self._everyone = np.arange(self.num_envs)
        self._ep_return = np.zeros(self.num_envs, dtype=np.float64)
        self._ep_length = np.zeros(self.num_envs, dtype=np.int32)
        self._rng: np.random.Generator | None = None

    @property
    def info(self) -> dict[str, float]:
        """The last step's parts, averaged over the batch (``reward/<term>``, ...)."""
        return self.task.info

    def set_progress(self, fraction_done: float) -> None:
        """Where training stands (0 to 1), for a task's curriculum; the runner calls it each iteration."""
        if hasattr(self.task, "set_progress"):
            self.task.set_progress(fraction_done)

    def reset(self, seed: int) -> torch.Tensor:
        self._rng = np.random.default_rng(int(seed))
        self.task.reset(self.sim, self._everyone, self._rng)
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        return self._to_torch(self.task.observe(self.sim, self._everyone, self._rng))

    def step(self, action: torch.Tensor) -> StepResult:
        if self._rng is None:
            raise RuntimeError("call reset(seed) before step()")
        act = np.clip(action.detach().to("cpu", torch.float64).numpy().reshape(self.num_envs, -1), -1.0, 1.0)
        self.task.act(self.sim, act, self._rng)
        unstable = self.sim.step(self.task.substeps)
        reward, terminated = self.task.evaluate(self.sim, act, self._rng)
        reward, terminated = reward.astype(np.float32), terminated | unstable
        self._ep_return += reward
        self._ep_length += 1
        truncated = (self._ep_length >= self.spec.episode_length) & ~terminated
        final_obs = self.task.observe(self.sim, self._everyone, self._rng)
        ep_return, ep_length = self._ep_return.copy(), self._ep_length.copy()
        obs = self._restart(np.flatnonzero(terminated | truncated), final_obs)
        return StepResult(obs=self._to_torch(obs), reward=self._to_torch(reward),
                          terminated=self._to_torch(terminated, torch.bool),
                          truncated=self._to_torch(truncated, torch.bool), final_obs=self._to_torch(final_obs),
                          episode_return=self._to_torch(ep_return),
                          episode_length=self._to_torch(ep_length, torch.int32))

    def _restart(self, ended: np.ndarray, final_obs: np.ndarray) -> np.ndarray:
        """Same-step auto-reset of envs ``ended``: the observations to act on next, the new
        episodes' first ones where an episode ended (``final_obs`` itself where none did)."""
        if not ended.size:
            return final_obs
        self.task.reset(self.sim, ended, self._rng)
        obs = final_obs.copy()
        obs[ended] = self.task.observe(self.sim, ended, self._rng)
        self._ep_return[ended] = 0.0
        self._ep_length[ended] = 0
        return obs

    def _to_torch(self, x: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.as_tensor(x, dtype=dtype).to(self.device)

    def close(self) -> None:
        self.sim.batch = None  # the Batch's threads end with it


def plan_threads(requested: int | str, num_envs: int) -> int:
    """Threads for a batch of ``num_envs``: ``auto`` takes every core this process may use
    (a pinned ``compare`` run its own), at most one per env."""
    n = len(affinity()) if requested == "auto" else int(requested)
    if n < 1:
        raise ValueError(f"--env-shards (the MuJoCo simulator's threads) must be >= 1, got {requested!r}")
    return max(1, min(n, int(num_envs)))


def reflected_tasks() -> tuple[str, ...]:
    """The tasks with a left-right reflection (``--symmetric``)."""
    return tuple(name for name, task in TASKS.items() if hasattr(task, "reflection"))


def validate(cfg: Any) -> None:
    """``--randomize``: the task's domain randomization switches (``none``, ``all`` or a comma
    list, :meth:`Randomization.parse`); ``--env-kwargs``, the task's settings. ``--env-shards``
    is the number of threads (``auto``: every core), ``--backend`` is Brax's and ignored here."""
    Randomization.parse(getattr(cfg, "randomize", "none"))
    if getattr(cfg, "env_kwargs", None):
        check_recordable(cfg.env_kwargs)
        TASKS[cfg.env].check_env_kwargs(call_kwargs(cfg.env_kwargs))


def make_vec_env(name: str, num_envs: int, device: torch.device | str = "cpu", episode_length: int = 1000,
                 backend: str | None = None, shards: int | str = "auto", env_kwargs: dict[str, Any] | None = None,
                 **task_options: Any) -> MujocoVecEnv:
    """Task ``name`` in a :class:`MujocoVecEnv`; ``shards`` is the thread count, ``env_kwargs``
    the task's settings (``--env-kwargs``: Go1Config's fields), ``task_options`` go to the task
    (e.g. ``randomization=Randomization.all_on()`` for Go1)."""
    if name not in TASKS:
        raise ValueError(f"unknown MuJoCo task {name!r}; choose one of {', '.join(TASKS)}")
    if env_kwargs:
        task_options = {**task_options, "env_kwargs": call_kwargs(env_kwargs)}
    return MujocoVecEnv(TASKS[name](**task_options), num_envs, episode_length=episode_length, device=device,
                        threads=shards)


def deploy_spec(name: str, **task_options: Any) -> dict[str, Any]:
    """What a robot-side loop needs to run a policy of task ``name`` trained with ``task_options``:
    the task's own ``deploy_spec()`` (``stridelab export`` writes it beside the policy)."""
    env = make_vec_env(name, 1, shards=1, **task_options)
    try:
        return env.task.deploy_spec()
    finally:
        env.close()
