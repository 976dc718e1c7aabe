"""The simulator alone on a training run's own steps: record what training asks of a native MuJoCo
env, then replay it on a fresh env and time the physics.

The physics' cost depends on what the robots do: a Go1 batch under the policy's small joint-target
noise makes more contacts and needs more solver iterations than one collapsed under uniformly
random targets, so a simulator stepped under random actions is not the same work as training's
steps. Replaying the run's own calls (its resets with their seeds, its curriculum settings, its
actions) on an env built the same way repeats its states exactly (the env is deterministic given
them; every reward is checked), so ``physics_sps`` is what the simulator alone does on the very
steps the run trained on.

    with recording() as log:
        summary = train(cfg)
    print(replay(log, skip_steps=cfg.num_steps))                 # in this process
    print(replay_alone(log, skip_steps=cfg.num_steps))           # in a process of its own

``python benchmarks/env_replay.py RECORDING SKIP_STEPS`` replays a recording's ``envs`` saved with
``torch.save`` and prints the result as one JSON line (what :func:`replay_alone` runs).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

if __package__:  # imported as benchmarks.env_replay
    from benchmarks.mujoco_throughput import physics_load
else:  # run as a script, or imported with this folder on sys.path (benchmarks/throughput.py)
    from mujoco_throughput import physics_load


@dataclass
class Recording:
    """Every env built while recording: its ``make_vec_env`` arguments and the calls made on it."""

    envs: list[tuple[tuple, dict, list[tuple]]] = field(default_factory=list)

    def busiest(self) -> tuple[tuple, dict, list[tuple]]:
        """The env that stepped most: the training env where evaluation is off or short, as in
        benchmarks/throughput.py (an evaluation env's 1,000-step episodes can outstep a short run)."""
        return max(self.envs, key=lambda e: sum(call[0] == "step" for call in e[2]))


@contextmanager
def recording() -> Iterator[Recording]:
    """Record every native MuJoCo env built in the block, and each ``reset``, ``set_progress``
    and ``step`` called on it (the step's action and reward)."""
    import stridelab.envs.mujoco as mj

    made, log = mj.make_vec_env, Recording()

    def make(*args: Any, **kwargs: Any) -> Any:
        env = made(*args, **kwargs)
        calls: list[tuple] = []
        log.envs.append((args, kwargs, calls))
        _record(env, calls)
        return env

    mj.make_vec_env = make
    try:
        yield log
    finally:
        mj.make_vec_env = made


def _record(env: Any, calls: list[tuple]) -> None:
    reset, set_progress, step = env.reset, env.set_progress, env.step

    def recorded_reset(seed: int) -> torch.Tensor:
        calls.append(("reset", seed))
        return reset(seed)

    def recorded_progress(fraction_done: float) -> None:
        calls.append(("progress", fraction_done))
        set_progress(fraction_done)

    def recorded_step(action: torch.Tensor) -> Any:
        res = step(action)
        # Kept, not copied: the policy and MujocoVecEnv hand out fresh tensors each step (were one
        # reused, the replay's reward check would say so).
        calls.append(("step", action, res.reward))
        return res

    env.reset, env.set_progress, env.step = recorded_reset, recorded_progress, recorded_step


def replay(log: Recording, skip_steps: int) -> dict[str, Any]:
    """Repeat the training env's calls on a fresh env built the same way; time its physics
    (``BatchedSim.step``) and whole steps, the first ``skip_steps`` steps (training's first
    iteration, which its steady-state speed leaves out too) untimed. ``identical``: every reward
    equals the recorded one, so the replay stepped the run's very states; ``contacts`` and
    ``solver_iterations``: their means over the timed steps' batches (the physics' load)."""
    import stridelab.envs.mujoco as mj

    args, kwargs, calls = log.busiest()
    if sum(call[0] == "step" for call in calls) <= skip_steps:
        raise ValueError(f"the recording has no steps after the first {skip_steps} to time")
    env = mj.make_vec_env(*args, **kwargs)
    spent = _time_physics(env)
    load_now, load = physics_load(env.sim.batch), {"contacts": 0.0, "solver_iterations": 0.0}
    steps, identical = 0, True
    try:
        for call in calls:
            if call[0] == "reset":
                env.reset(call[1])
            elif call[0] == "progress":
                env.set_progress(call[1])
            else:
                if steps == skip_steps:
                    spent.update(physics=0.0, env=0.0)
                t = time.perf_counter()
                res = env.step(call[1])
                spent["env"] += time.perf_counter() - t
                identical = identical and torch.equal(res.reward, call[2])
                steps += 1
                if steps > skip_steps:
                    for key, value in load_now().items():
                        load[key] += value
    finally:
        env.close()
    timed = (steps - skip_steps) * env.num_envs
    return {"physics_sps": timed / spent["physics"], "env_sps": timed / spent["env"], "steps": steps * env.num_envs,
            "identical": identical, **{key: total / (steps - skip_steps) for key, total in load.items()}}


def _time_physics(env: Any) -> dict[str, float]:
    """Wrap ``env``'s physics call with a timer; returns the dict its seconds add up in
    (``physics``; ``env`` for the caller's own timing of whole steps)."""
    physics_step, spent = env.sim.step, {"physics": 0.0, "env": 0.0}

    def timed_physics(substeps: int) -> Any:
        t = time.perf_counter()
        out = physics_step(substeps)
        spent["physics"] += time.perf_counter() - t
        return out

    env.sim.step = timed_physics
    return spent


def replay_alone(log: Recording, skip_steps: int) -> dict[str, Any]:
    """:func:`replay` in a fresh process that does nothing else: the simulator alone, without
    anything the recording process did before (its memory, its threads) to slow it or speed it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recording.pt"
        torch.save(log.envs, path)  # plain data: the child need not import this module by the same name
        out = subprocess.run([sys.executable, __file__, str(path), str(skip_steps)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"the replay failed (exit {out.returncode}): {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    recorded = Recording(torch.load(sys.argv[1], weights_only=False))
    print(json.dumps(replay(recorded, skip_steps=int(sys.argv[2]))))
