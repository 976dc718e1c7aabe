"""Throughput of the native MuJoCo simulator (Go1JoystickFlatTerrain's model) against one thread.

One command, one process, so the ratios are measured side by side on the same (noisy) machine:

    MENAGERIE_ROOT=../shared/menagerie python benchmarks/mujoco_throughput.py
    python benchmarks/mujoco_throughput.py --num-envs 512 --seconds 3 --rounds 5 --json out.json

Every part steps the same batch (``--num-envs`` copies of the Go1 model stepper the env uses,
from the home pose, under the same random joint targets redrawn every control step) by whole
env steps: 5 physics steps of 4 ms, the 50 Hz control of the task. The parts are measured in
rounds, ``loop`` first in each, and each part's ratio is to the ``loop`` of its own round (the
table shows the median over rounds and the range), so drift on a shared machine cancels.

* ``loop``: the reference, one thread: ``mujoco.mj_step(model, data, nstep=5)`` for each env's
  ``MjData`` in a Python loop.
* ``batch-1``: ``mujoco.batch.Batch`` on one thread (the same work, the loop in C).
* ``batch``: ``mujoco.batch.Batch`` on every core this process may use: what the env steps.
* ``rollout``: one persistent ``mujoco.rollout.Rollout`` on every core, states in and out as
  ``[N, nstate]`` arrays, controls ``[N, 5, nu]``, sensors recorded.
* ``pool``: a ``ThreadPoolExecutor`` with a thread per core, each rolling out its slice of the
  batch with its own single-threaded ``Rollout`` (the GIL released inside).
* ``env``: the whole ``MujocoVecEnv.step`` on every core (torch actions in, observations,
  rewards, terminations and auto-resets out): the simulator as training sees it.

``us/step`` is wall-clock microseconds per env step (one env, one control step), ``steps/s``
env steps per second. The first line says how many cores other programs kept busy during the
rounds (``stridelab.cores.CoreMeter``): the ratios only mean "every core" on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mujoco
import numpy as np
import torch
from mujoco import batch as mj_batch
from mujoco import rollout as mj_rollout

from stridelab.cores import CoreMeter, affinity
from stridelab.envs.go1 import NAME, SUBSTEPS, Go1Config, build_model
from stridelab.envs.mujoco import make_vec_env

TASK = NAME  # the task whose model every part steps (benchmarks/throughput.py --env TASK reuses the steppers)
PARTS = ("loop", "batch-1", "batch", "rollout", "pool", "env")
FULL = mujoco.mjtState.mjSTATE_FULLPHYSICS
ACTION_SCALE = Go1Config().action_scale


def targets(model: mujoco.MjModel, n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, nu]`` random joint targets around the home pose, as random actions give."""
    home = model.key_ctrl[model.key("home").id]
    return home + ACTION_SCALE * rng.uniform(-1.0, 1.0, (n, model.nu))


def home_state(model: mujoco.MjModel) -> np.ndarray:
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    state = np.empty(mujoco.mj_stateSize(model, FULL))
    mujoco.mj_getState(model, data, state, FULL)
    return state


def loop_stepper(model: mujoco.MjModel, n: int, threads: int) -> Callable[[np.ndarray], None]:
    datas = [mujoco.MjData(model) for _ in range(n)]
    for d in datas:
        mujoco.mj_resetDataKeyframe(model, d, model.key("home").id)

    def step(ctrl: np.ndarray) -> None:
        for d, u in zip(datas, ctrl):
            d.ctrl[:] = u
            mujoco.mj_step(model, d, nstep=SUBSTEPS)
    return step


def batch_stepper(model: mujoco.MjModel, n: int, threads: int) -> Callable[[np.ndarray], None]:
    b = mj_batch.Batch(model, n, threads)
    b.reset(keyframe=model.key("home").id)
    ctrl, _, load = b.bind("ctrl"), b.bind("sensordata"), physics_load(b)

    def step(u: np.ndarray) -> None:
        ctrl[:] = u
        b.step(nstep=SUBSTEPS, stage=mujoco.mjtStage.mjSTAGE_VEL)
    step.keep = b  # type: ignore[attr-defined]
    step.load = load  # type: ignore[attr-defined]
    return step


def physics_load(b: mj_batch.Batch) -> Callable[[], dict[str, float]]:
    """A function returning the batch's mean contacts and solver iterations at its last call
    (what a step's physics costs depends on them). Bind before the first call."""
    ncon, niter = b.bind("ncon"), b.bind("solver_niter")

    def load() -> dict[str, float]:
        return {"contacts": float(ncon.mean()), "solver_iterations": float(niter.reshape(len(niter), -1)[:, 0].mean())}
    return load


def rollout_stepper(model: mujoco.MjModel, n: int, threads: int) -> Callable[[np.ndarray], None]:
    pool = mj_rollout.Rollout(nthread=threads)
    datas = [mujoco.MjData(model) for _ in range(threads)]
    state = np.tile(home_state(model), (n, 1))
    out = np.empty((n, SUBSTEPS, state.shape[1]))
    sensors = np.empty((n, SUBSTEPS, model.nsensordata))

    def step(u: np.ndarray) -> None:
        control = np.repeat(u[:, None, :], SUBSTEPS, axis=1)
        pool.rollout([model], datas, state, control, nstep=SUBSTEPS, state=out, sensordata=sensors)
        state[:] = out[:, -1]
    step.keep = pool  # type: ignore[attr-defined]
    return step


def pool_stepper(model: mujoco.MjModel, n: int, threads: int) -> Callable[[np.ndarray], None]:
    slices = [slice(i * n // threads, (i + 1) * n // threads) for i in range(threads)]
    workers = ThreadPoolExecutor(threads)
    runners = [(mj_rollout.Rollout(nthread=0), mujoco.MjData(model)) for _ in slices]
    state = np.tile(home_state(model), (n, 1))
    out = np.empty((n, SUBSTEPS, state.shape[1]))
    sensors = np.empty((n, SUBSTEPS, model.nsensordata))

    def run(k: int, control: np.ndarray) -> None:
        s, (pool, data) = slices[k], runners[k]
        pool.rollout([model], [data], state[s], control[s], nstep=SUBSTEPS, state=out[s], sensordata=sensors[s])

    def step(u: np.ndarray) -> None:
        control = np.repeat(u[:, None, :], SUBSTEPS, axis=1)
        list(workers.map(run, range(threads), [control] * threads))
        state[:] = out[:, -1]
    step.keep = (workers, runners)  # type: ignore[attr-defined]
    return step


def env_stepper(model: mujoco.MjModel, n: int, threads: int) -> Callable[[np.ndarray], None]:
    env = make_vec_env(TASK, n, shards=threads)
    env.reset(0)
    g = torch.Generator().manual_seed(0)

    def step(u: np.ndarray) -> None:
        env.step(torch.rand(n, model.nu, generator=g) * 2 - 1)
    step.keep = env  # type: ignore[attr-defined]
    return step


STEPPERS = {"loop": (loop_stepper, False), "batch-1": (batch_stepper, False), "batch": (batch_stepper, True),
            "rollout": (rollout_stepper, True), "pool": (pool_stepper, True), "env": (env_stepper, True)}


def measure(step: Callable[[np.ndarray], None], model: mujoco.MjModel, n: int, seconds: float) -> dict:
    """Env steps per second of ``step`` over about ``seconds`` (after two untimed calls)."""
    rng = np.random.default_rng(0)
    for _ in range(2):
        step(targets(model, n, rng))
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step(targets(model, n, rng))
        calls += 1
    wall = time.perf_counter() - start
    return {"steps_per_s": calls * n / wall, "us_per_step": wall / (calls * n) * 1e6}


def run(args: argparse.Namespace) -> dict:
    model, cores = build_model(), len(affinity())
    steppers = {}
    for part in args.parts:
        make, every_core = STEPPERS[part]
        steppers[part] = make(model, args.num_envs, cores if every_core else 1)
    rounds, meter = [], CoreMeter()
    meter.others_busy()
    for _ in range(args.rounds):
        rounds.append({part: measure(steppers[part], model, args.num_envs, args.seconds) for part in args.parts})
        rounds[-1]["others_busy"] = meter.others_busy()  # cores other programs kept busy meanwhile
    return {"num_envs": args.num_envs, "cores": cores, "seconds": args.seconds, "rounds": rounds,
            "mujoco": mujoco.__version__}


def table(result: dict) -> str:
    rows = [f"{'part':<10}{'steps/s':>10}{'us/step':>10}{'x loop':>9}  range"]
    for part in (p for p in result["rounds"][0] if p != "others_busy"):
        speed = [r[part]["steps_per_s"] for r in result["rounds"]]
        us = [r[part]["us_per_step"] for r in result["rounds"]]
        ratio = [r[part]["steps_per_s"] / r["loop"]["steps_per_s"] for r in result["rounds"] if "loop" in r]
        spread = f"{min(ratio):.2f}-{max(ratio):.2f}" if ratio else ""
        x = f"{statistics.median(ratio):.2f}" if ratio else "-"
        rows.append(f"{part:<10}{statistics.median(speed):>10,.0f}{statistics.median(us):>10.1f}{x:>9}  {spread}")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-envs", type=int, default=256)
    p.add_argument("--seconds", type=float, default=2.0, help="timed seconds per part and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument("--json", type=Path, help="also write the measurements here")
    args = p.parse_args()
    result = run(args)
    busy = [r["others_busy"] for r in result["rounds"]]
    print(f"{args.num_envs} envs, {result['cores']} core(s), MuJoCo {result['mujoco']}, median of {args.rounds} "
          f"rounds; other programs kept {min(busy):.2f}-{max(busy):.2f} cores busy")
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
