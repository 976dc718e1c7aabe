"""Evaluation a roboticist reads: how well a velocity-command policy follows a fixed set of commands.

Each command of :data:`COMMANDS` is held for a whole episode (the task's ``hold_commands``) in
``envs_per_command`` envs at once, the policy acting deterministically (its mean). Per command,
and over all commands pooled (``overall``):

* ``lin_vel_error`` (m/s): mean over steps of ``||command_xy - v_xy||``, ``v`` the trunk's
  linear velocity in the body frame (the velocimeter at the IMU site);
* ``yaw_rate_error`` (rad/s): mean over steps of ``|command_yaw - w_z|``, ``w`` the gyro;
* ``falls_per_episode``: the fraction of episodes that ended by termination (a fall) rather
  than the time limit;
* ``return``: the episodes' undiscounted return.

Velocities are read noise-free (the task's ``observation_parts``, not the noisy observation).
The errors count only steady state: the first :data:`SETTLE_S` seconds after reset (the robot
starts standing, facing a random way, with a random push; at most half of a shorter episode)
are skipped, and so are an episode's steps from its end (a fall, or the time limit) on.
Conditions: ``nominal`` (no domain randomization) and ``randomized`` (every switch on). The
fused rollout is Brax's, so these run step by step from Python.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stridelab.envs import VecEnv, make_env

# name: (forward m/s, sideways m/s, yaw rate rad/s), body frame
COMMANDS: dict[str, tuple[float, float, float]] = {
    "stand": (0.0, 0.0, 0.0),
    "forward_0.5": (0.5, 0.0, 0.0),
    "forward_1.0": (1.0, 0.0, 0.0),
    "sideways_0.5": (0.0, 0.5, 0.0),
    "turn_left": (0.0, 0.0, 1.0),
    "turn_right": (0.0, 0.0, -1.0),
    "mix": (0.6, 0.3, 0.5),
}
SETTLE_S = 1.0  # s after reset not measured (the robot gets going)
CONDITIONS = {"nominal": "none", "randomized": "all"}  # condition: the task's randomization


def supports(env_name: str) -> bool:
    """Whether task ``env_name`` follows velocity commands that can be held (``hold_commands``)."""
    return hasattr(_task_class(env_name), "hold_commands")


def _task_class(env_name: str) -> Any:
    """The task class a simulator builds ``env_name`` from (native MuJoCo's ``TASKS``), or None."""
    from stridelab.envs.registry import simulator_module, simulator_of

    return getattr(simulator_module(simulator_of(env_name)), "TASKS", {}).get(env_name)


def tracking_errors(command: np.ndarray, lin_vel: np.ndarray, ang_vel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(lin [N] m/s, yaw [N] rad/s)``: ``||command[:, :2] - lin_vel[:, :2]||`` and
    ``|command[:, 2] - ang_vel[:, 2]|``; all inputs ``[N, 3]`` in the body frame."""
    lin = np.linalg.norm(np.asarray(command)[:, :2] - np.asarray(lin_vel)[:, :2], axis=1)
    return lin, np.abs(np.asarray(command)[:, 2] - np.asarray(ang_vel)[:, 2])


@dataclass
class Tally:
    """One episode per env, summed: ``[N]`` arrays."""

    lin_error: np.ndarray  # m/s, summed over the counted steps
    yaw_error: np.ndarray  # rad/s, summed over the counted steps
    steps: np.ndarray  # steps counted (steady state, before the episode ended)
    episode_return: np.ndarray
    fell: np.ndarray  # bool: the episode ended by termination

    @classmethod
    def zeros(cls, n: int) -> Tally:
        return cls(np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n), np.zeros(n, dtype=bool))

    def add_step(self, counted: np.ndarray, lin: np.ndarray, yaw: np.ndarray) -> None:
        """Add one step's errors ``[N]`` of the envs where ``counted [N]`` holds."""
        self.lin_error += np.where(counted, lin, 0.0)
        self.yaw_error += np.where(counted, yaw, 0.0)
        self.steps += counted


def summarize(tally: Tally, command_index: np.ndarray, names: list[str]) -> dict[str, dict[str, Any]]:
    """Per command (env ``i`` ran ``names[command_index[i]]``) and ``overall`` (every env pooled):
    the errors as means over all counted steps of those envs (``None`` if none was counted: all
    fell within :data:`SETTLE_S`), falls and return as means over their episodes."""
    rows = {name: _row(tally, command_index == i) for i, name in enumerate(names)}
    rows["overall"] = _row(tally, np.ones(len(command_index), dtype=bool))
    return rows


def _row(t: Tally, m: np.ndarray) -> dict[str, Any]:
    steps = int(t.steps[m].sum())
    return {"lin_vel_error": float(t.lin_error[m].sum() / steps) if steps else None,
            "yaw_rate_error": float(t.yaw_error[m].sum() / steps) if steps else None,
            "falls_per_episode": float(t.fell[m].mean()), "return": float(t.episode_return[m].mean()),
            "episodes": int(m.sum()), "steps": steps}


def settle_steps(dt: float, episode_length: int) -> int:
    """Steps not measured after reset: :data:`SETTLE_S`, at most half an episode."""
    return min(int(round(SETTLE_S / dt)), episode_length // 2)


@torch.no_grad()
def run_held(agent: Any, env: VecEnv, seed: int) -> Tally:
    """One episode per env of ``env`` (a task whose commands are held) from ``reset(seed)``,
    deterministic actions; the errors measured from the state after each step, from
    :func:`settle_steps` on, until the env's episode ends."""
    tally = Tally.zeros(env.num_envs)
    obs = env.reset(seed)
    with one_torch_thread():
        _play(agent, env, obs, tally)
    return tally


def _play(agent: Any, env: Any, obs: torch.Tensor, tally: Tally) -> None:
    task, everyone = env.task, np.arange(env.num_envs)
    skip, finished = settle_steps(env.spec.dt, env.spec.episode_length), np.zeros(env.num_envs, dtype=bool)
    for t in range(1, env.spec.episode_length + 1):
        action, _ = agent.act(obs, deterministic=True)
        res = env.step(action)
        done = res.done.cpu().numpy()
        first = done & ~finished
        tally.episode_return[first] = res.episode_return.cpu().numpy()[first]
        tally.fell[first] = res.terminated.cpu().numpy()[first]
        finished |= done  # an ended env's state is already its next episode's: not counted
        if t > skip:
            parts = task.observation_parts(env.sim, everyone)  # noise-free, body frame
            tally.add_step(~finished, *tracking_errors(parts["command"], parts["base_lin_vel"], parts["base_ang_vel"]))
        obs = res.obs
        if finished.all():
            break


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for the block: a policy on a few dozen rows gains nothing from more,
    and on a busy machine its threads' barriers made each step several times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def evaluate_condition(agent: Any, env_name: str, episode_length: int, envs_per_command: int, seed: int,
                       randomization: str = "none", device: torch.device | str = "cpu",
                       env_kwargs: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """:func:`summarize`'s rows for every command of :data:`COMMANDS`, ``envs_per_command`` envs
    each, in one batch of envs with task randomization ``randomization`` (``none``, ``all``) and
    the task's settings ``env_kwargs`` (the run's)."""
    names = list(COMMANDS)
    command_index = np.repeat(np.arange(len(names)), envs_per_command)
    env = make_env(env_name, len(command_index), device=device, episode_length=episode_length,
                   env_kwargs=env_kwargs, randomization=randomization)
    try:
        env.task.hold_commands(np.array([COMMANDS[names[i]] for i in command_index]))  # type: ignore[attr-defined]
        tally = run_held(agent, env, seed)
    finally:
        env.close()
    return summarize(tally, command_index, names)


def command_set(agent: Any, env_name: str, episode_length: int, envs_per_command: int, seed: int,
                device: torch.device | str = "cpu", conditions: tuple[str, ...] = tuple(CONDITIONS),
                env_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The command-set table: ``{"nominal": rows, "randomized": rows, ...}`` (rows by command,
    then ``overall``), with the commands and how it was measured (``settle_s``: the seconds
    after reset not measured)."""
    dt = _task_class(env_name).ctrl_dt
    result: dict[str, Any] = {"commands": {k: list(v) for k, v in COMMANDS.items()},
                              "settle_s": round(settle_steps(dt, episode_length) * dt, 6),
                              "envs_per_command": envs_per_command, "episode_length": episode_length,
                              "actions": "deterministic"}
    for condition in conditions:
        result[condition] = evaluate_condition(agent, env_name, episode_length, envs_per_command, seed,
                                               CONDITIONS[condition], device, env_kwargs)
    return result


def scalars(rows: dict[str, dict[str, Any]], prefix: str = "eval") -> dict[str, float]:
    """The ``overall`` row as logged scalars: ``eval/lin_vel_error``, ``eval/yaw_rate_error``,
    ``eval/falls_per_episode`` (NaN for an error nothing was measured for)."""
    overall = rows["overall"]
    return {f"{prefix}/{k}": float("nan") if overall[k] is None else overall[k]
            for k in ("lin_vel_error", "yaw_rate_error", "falls_per_episode")}


def format_table(result: dict[str, Any]) -> str:
    """The table ``stridelab eval`` prints: one row per command and ``overall``, each condition's
    four metrics side by side."""
    conditions = [c for c in CONDITIONS if c in result]
    head = f"{'command':<13}{'vx':>5}{'vy':>5}{'wz':>6}"
    cols = f"{'lin m/s':>9}{'yaw rad/s':>10}{'falls':>7}{'return':>9}"
    k = result["envs_per_command"]
    lines = [f"velocity tracking over {len(result['commands'])} commands, {k} episode{'s' * (k != 1)} each "
             f"({result['actions']} actions; errors from {result['settle_s']:g} s after reset to the episode's end):",
             " " * len(head) + "".join(f" | {c:^{len(cols) - 1}}" for c in conditions),
             head + "".join(f" |{cols}" for _ in conditions)]
    for name in [*result["commands"], "overall"]:
        command = result["commands"].get(name)
        line = f"{name:<13}" + ("".join(f"{v:>5.1f}" for v in command[:2]) + f"{command[2]:>6.1f}" if command
                                else " " * 16)
        for c in conditions:
            r = result[c][name]
            line += (f" |{_num(r['lin_vel_error'], 9)}{_num(r['yaw_rate_error'], 10)}{_num(r['falls_per_episode'], 7)}"
                     f"{_num(r['return'], 9)}")
        lines.append(line)
    return "\n".join(line.rstrip() for line in lines)


def _num(x: float | None, width: int) -> str:
    return f"{'n/a':>{width}}" if x is None or np.isnan(x) else f"{x:>{width}.2f}"
