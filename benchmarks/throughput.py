"""Throughput on Brax Ant: the simulator's limit next to stridelab's PPO and TRPO and their peers.

One command, one run, so the ratios are measured side by side on the same (noisy) machine:

    pip install -e '.[bench]'
    python benchmarks/throughput.py                       # table + benchmarks/results/throughput.json
    python benchmarks/throughput.py --scaling             # steps/s against num_envs, 64 to 8192,
                                                          # + docs/img/throughput_scaling.png
    python benchmarks/throughput.py --time-to-return 3000 # wall-clock to the first evaluation
                                                          # >= 3000: stridelab PPO, TRPO, Brax PPO

Each measurement runs in its own process (in turn, never two at once), so peak memory and the
time from the process's start to its first update (imports and compilation included) belong
to that measurement alone. Steps per second are steady-state: compilation excluded.

Measured:

* ``simulator``: Brax's ``env.step`` for ``num_envs`` envs, vmapped, random actions, 16 steps per
  jitted ``lax.scan`` and no torch anywhere, on one XLA device: the simulator's limit as
  stridelab used it before issue 21 (the baseline of the ``x sim`` column).
* ``simulator-sharded``: the same program with the batch split over one XLA CPU device per core
  (``jax.shard_map``), as stridelab's Brax envs now step it: one process's physics capacity
  (the ``x sharded`` column).
* ``pinned-processes``: one ``simulator`` process per core, each pinned to its core
  (``taskset``) with ``num_envs / cores`` envs, run at once; their steps/s summed: the machine's
  physics capacity (the ``x pinned`` column).
* The simulator is measured again between every two other measurements (the machine's speed
  drifts by 10-20% within minutes); each ratio is to the mean of the simulator runs just before
  and after it, and ``simulator-again`` in the table is the last of them. ``--no-bracket``
  measures it only where ``--parts`` lists ``simulator`` and ``simulator-again``.
* stridelab's training parts are measured ``--repeats`` times (default 3), each time between two
  simulator runs; the table shows the median ratio and the range (one run can be off by 0.1).
* ``simulator-torch``: the same through stridelab's torch adapter, one step per call (what a
  user stepping ``BraxVecEnv`` from torch gets).
* ``stridelab-ppo`` / ``stridelab-trpo``: ``stridelab train`` with the Ant presets (fused rollout,
  the batch sharded over every core). ``stridelab-ppo-1shard`` / ``stridelab-trpo-1shard``: the
  same on one XLA device (``--env-shards 1``), as before issue 21.
* ``stridelab-ppo-sequential`` / ``stridelab-trpo-sequential``: with ``--no-overlap-critic`` (the
  value net's update does not run alongside the next rollout).
* ``stridelab-ppo-stepwise``: PPO with ``--no-fused-rollout`` (the policy in torch, stepped from Python).
* ``brax-ppo``: ``brax.training.agents.ppo.train`` with Brax's published Ant settings at the same
  env count and as many XLA devices as ``--brax-devices`` (default: one per core; Brax's trainer
  ``pmap``s over them) (its ``training/sps``, evaluation excluded), compiled with the XLA CPU options
  stridelab's own programs use (``XLA_FLAGS``; see ``CPU_COMPILER_OPTIONS``), as is ``simulator``. On JAX 0.10 it needs
  ``jax.device_put_replicated``, removed from JAX's public API but still in ``jax._src.api``.
* ``sb3-ppo`` / ``sb3-trpo``: Stable-Baselines3 PPO and sb3-contrib TRPO on Gymnasium's Ant-v5
  (MuJoCo, one env, their defaults).

On a native MuJoCo task (``--env Go1JoystickFlatTerrain``; issue 30) the table is another,
measured in rounds so the machine's drift cancels: ``--repeats`` rounds (default 3), each the
simulator (a process measuring, one after the other, for ``--seconds`` each (default 4): ``loop``,
a single-threaded ``mujoco.mj_step`` loop over the batch; ``batch``, ``mujoco.batch.Batch`` on
every core, what the env steps: "the simulator alone"; ``env``, the whole ``MujocoVecEnv.step``;
benchmarks/mujoco_throughput.py's steppers, the same batch of ``--num-envs`` (default: the
task's preset, 256) under random joint targets) and, each after a simulator measurement,
``stridelab train`` with the task's presets for ``stridelab-ppo`` and ``stridelab-trpo`` (steady
state, the first iteration and start-up excluded), and the simulator once more at the end. The
ratios: ``x loop``, each simulator part to the loop of the same process; ``x simulator`` and
``x env``, training to the mean of the simulator measurements just before and after it; ``x
replay``, training to the simulator alone on the run's own steps: its env calls recorded, then
replayed on a fresh env in a process of its own right after, its physics timed
(benchmarks/env_replay.py; every reward checked equal). The acceptance (training >= 0.6 x the
simulator on the same batch) reads ``x replay``: under uniformly random targets the robots collapse
and the physics does less work per step (fewer contacts, fewer solver iterations) than under a
policy's actions. Medians over the rounds, with the range. The table also says how many cores
other programs kept busy meanwhile (``stridelab.cores.CoreMeter``): on a busy machine the ratios
are not a quiet one's.
JSON: ``benchmarks/results/throughput_<env>.json`` unless ``--out``.

``CPU us/step``: CPU time of the measuring process (every thread, XLA's and torch's) per env step,
in microseconds, steady state. Where the simulator alone keeps every core busy, this is what a
training run's steps cost next to the simulator's, whatever the threads' overlap: a run can reach
at most (simulator's CPU per step / the run's) x the sharded simulator's steps/s.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()  # the child's start: "first update" counts imports and compilation

import argparse  # noqa: E402
import contextlib  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

PARTS = ["simulator", "simulator-sharded", "pinned-processes", "simulator-torch", "stridelab-ppo", "stridelab-trpo",
         "stridelab-ppo-1shard", "stridelab-trpo-1shard", "stridelab-ppo-sequential", "stridelab-trpo-sequential",
         "stridelab-ppo-stepwise", "brax-ppo", "sb3-ppo", "sb3-trpo", "simulator-again"]
TRAINERS = ["stridelab-ppo", "stridelab-trpo", "brax-ppo"]  # raced to a return by --time-to-return
# The physics capacities every part is also measured against: part -> its column's key.
CAPACITY = {"simulator-sharded": "x_sharded", "pinned-processes": "x_pinned"}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the measurements (each runs in its own process) ------------------------------------------

def simulator(env_name: str, num_envs: int, backend: str, seconds: float, sharded: bool = False) -> dict:
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from stridelab.envs.brax import _import_brax_envs, jit, plan_shards

    env = _import_brax_envs().get_environment(env_name, backend=backend)
    shards = plan_shards("auto", num_envs, len(jax.devices()))[0] if sharded else 1
    step = jax.vmap(env.step)

    def scan(state, key):  # noqa: ANN001, ANN202
        def body(s, k):  # noqa: ANN001, ANN202
            a = jax.random.uniform(k, (num_envs // shards, env.action_size), minval=-1.0, maxval=1.0)
            return step(s, a), ()
        if shards > 1:  # each shard its own actions
            key = jax.random.fold_in(key, jax.lax.axis_index("envs"))
        return jax.lax.scan(body, state, jax.random.split(key, 16))[0]

    reset = jax.vmap(env.reset)
    if shards > 1:  # as stridelab's envs split a batch: one shard per XLA device (a core)
        mesh, envs = Mesh(np.array(jax.devices()[:shards]), ("envs",)), PartitionSpec("envs")
        # check_vma off: Brax writes constants into its state's metrics, which the type check
        # takes for values replicated over shards, unlike the rest of the scan's carry.
        scan = jax.shard_map(scan, mesh=mesh, in_specs=(envs, PartitionSpec()), out_specs=envs, check_vma=False)
        reset = jax.shard_map(reset, mesh=mesh, in_specs=envs, out_specs=envs, check_vma=False)
    run = jit(scan)  # compiled as stridelab compiles its own programs (CPU_COMPILER_OPTIONS)
    keys = jax.random.split(jax.random.PRNGKey(0), num_envs)
    state = jit(reset)(keys if shards == 1 else jax.device_put(keys, NamedSharding(mesh, envs)))
    state = jax.block_until_ready(run(state, jax.random.PRNGKey(1)))
    first = time.perf_counter() - _T0
    calls, t, cpu = 0, time.perf_counter(), time.process_time()
    while calls < 3 or time.perf_counter() - t < seconds:
        state = run(state, jax.random.PRNGKey(calls))
        calls += 1
        if calls % 4 == 0:
            jax.block_until_ready(state)
    jax.block_until_ready(state)
    steps = num_envs * 16 * calls
    return {"sps": steps / (time.perf_counter() - t), "first_update_s": first, "shards": shards,
            "cpu_us_per_step": 1e6 * (time.process_time() - cpu) / steps}


def pinned_processes(args: argparse.Namespace) -> dict:
    """One ``simulator`` per core, pinned to it, ``num_envs / cores`` envs each, all at once."""
    from stridelab.cores import affinity

    cores = affinity()
    cmd = [sys.executable, __file__, "--part", "simulator", "--num-envs", str(args.num_envs // len(cores)),
           "--env", args.env, "--backend", args.backend, "--seconds", str(args.seconds)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "JAX_NUM_CPU_DEVICES": "1"}
    procs = [subprocess.Popen(["taskset", "-c", str(c), *cmd], stdout=subprocess.PIPE, text=True, env=env)
             for c in cores]
    each = [json.loads([ln for ln in p.communicate()[0].splitlines() if ln.startswith("{")][-1]) for p in procs]
    sps = sum(r["sps"] for r in each)
    return {"sps": sps, "first_update_s": max(r["first_update_s"] for r in each),
            "processes": len(cores), "each_sps": [r["sps"] for r in each],
            # CPU seconds per second summed over the processes, per step of all of them
            "cpu_us_per_step": sum(r["cpu_us_per_step"] * r["sps"] for r in each) / sps}


def simulator_torch(env_name: str, num_envs: int, backend: str, seconds: float) -> dict:
    import torch

    from stridelab.envs import make_env

    env = make_env(env_name, num_envs, backend=backend)
    env.reset(0)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):  # compile and warm up
        env.step(torch.rand(num_envs, env.spec.act_dim, generator=g) * 2 - 1)
    first = time.perf_counter() - _T0
    steps, t = 0, time.perf_counter()
    while steps < 16 or time.perf_counter() - t < seconds:
        res = env.step(torch.rand(num_envs, env.spec.act_dim, generator=g) * 2 - 1)
        steps += 1
    res.obs.sum().item()
    return {"sps": num_envs * steps / (time.perf_counter() - t), "first_update_s": first}


def _sibling(name: str):  # noqa: ANN202
    """Module ``name`` of this folder (benchmarks/mujoco_throughput.py's steppers,
    benchmarks/env_replay.py), whether this file runs as a script (its folder on ``sys.path``) or
    is imported as ``benchmarks.throughput`` (the repository's)."""
    return importlib.import_module(f"benchmarks.{name}" if __package__ else name)


MUJOCO_SIM_PARTS = ("loop", "batch", "env")  # mujoco_throughput's steppers, in the order measured
MUJOCO_TRAINERS = ("stridelab-ppo", "stridelab-trpo")
MUJOCO_PARTS = MUJOCO_TRAINERS + ("stridelab-ppo-sequential", "stridelab-trpo-sequential")  # --parts allows these


def mujoco_simulator(env_name: str, num_envs: int, seconds: float) -> dict:
    """The native MuJoCo task's physics in this process, one part after the other, each for
    ``seconds``: :data:`MUJOCO_SIM_PARTS` (``loop`` on one thread, ``batch`` and ``env`` on every
    core this process may use), from the same start under the same random joint targets."""
    from stridelab.cores import CoreMeter, affinity

    bench = _sibling("mujoco_throughput")
    if env_name != bench.TASK:
        raise SystemExit(f"the MuJoCo simulator parts step {bench.TASK}'s model "
                         f"(benchmarks/mujoco_throughput.py), not {env_name!r}")
    model, cores = bench.build_model(), len(affinity())
    steppers = {part: bench.STEPPERS[part][0](model, num_envs, cores if bench.STEPPERS[part][1] else 1)
                for part in MUJOCO_SIM_PARTS}
    first = time.perf_counter() - _T0
    meter = CoreMeter()
    out: dict = {part: bench.measure(steppers[part], model, num_envs, seconds) for part in MUJOCO_SIM_PARTS}
    out["batch"].update(steppers["batch"].load())  # the physics' load under random targets, at the end
    import mujoco

    out.update(others_busy=meter.others_busy(), threads=cores, first_update_s=first, mujoco=mujoco.__version__)
    return out


def _replay(log: Any, sps: float, num_steps: int) -> dict:
    """The simulator alone on the run's own steps, in a process of its own
    (benchmarks/env_replay.py), and training's steps/s against it (``x_replay``)."""
    r = _sibling("env_replay").replay_alone(log, skip_steps=num_steps)
    out = {"replay_physics_sps": r["physics_sps"], "replay_env_sps": r["env_sps"], "replay_identical": r["identical"],
           "replay_contacts": r["contacts"], "replay_solver_iterations": r["solver_iterations"]}
    if r["identical"]:  # otherwise the replay stepped other states: no ratio to them
        out["x_replay"] = sps / r["physics_sps"]
    return out


def stridelab_training(algo: str, env_name: str, num_envs: int, backend: str, iterations: int, fused: bool = True,
                       overlap: bool = True, shards: str = "auto") -> dict:
    from stridelab.config import build_config
    from stridelab.cores import CoreMeter
    from stridelab.train import train

    with tempfile.TemporaryDirectory() as run_dir:
        cfg = build_config({"algo": algo, "env": env_name, "num_envs": num_envs, "backend": backend,
                            "run_dir": run_dir, "progress": False, "eval_episodes": 0, "fused_rollout": fused,
                            "overlap_critic": overlap, "env_shards": shards})
        cfg.total_steps = cfg.batch_size * (iterations + 1)
        before_train = time.perf_counter() - _T0
        meter = CoreMeter()
        native = _is_native_mujoco(env_name)
        with _sibling("env_replay").recording() if native else contextlib.nullcontext() as log:
            summary = train(cfg)
        others_busy = meter.others_busy()  # cores other programs kept busy while it trained (not the replay's)
    steady = summary["time/rollout_s"] + summary["time/batch_s"] + summary["time/update_s"]
    replayed = _replay(log, summary["time/steady_sps"], cfg.num_steps) if native else {}
    return {
        **replayed,
        "others_busy": others_busy,
        "sps": summary["time/steady_sps"],
        "first_update_s": before_train + summary["time/first_update_s"],
        "rollout_fraction": summary["time/rollout_s"] / steady,
        "batch_fraction": summary["time/batch_s"] / steady,
        "update_fraction": summary["time/update_s"] / steady,
        "batch_size": cfg.batch_size,
        "update_s_per_iteration": summary["time/update_s"] / iterations,
        "cpu_us_per_step": summary["time/steady_cpu_us_per_step"],
    }


def brax_ppo(env_name: str, num_envs: int, backend: str, steps: int, devices: int, num_evals: int = 3) -> dict:
    import functools

    from stridelab.envs.brax import xla_flags

    # Brax's programs get the XLA setting stridelab compiles its own with (read when JAX's
    # backend starts, so before anything runs), so the two trainers meet on the same compiler,
    # and as many CPU devices as stridelab's sharded envs (Brax pmaps over every local device).
    count = f"--xla_force_host_platform_device_count={devices}"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {xla_flags()} {count}".strip()
    import jax

    if not hasattr(jax, "device_put_replicated"):  # removed from JAX's API; Brax 0.14 still calls it
        from jax._src import api

        jax.device_put_replicated = api.device_put_replicated
    from brax.training.agents.ppo import train as ppo

    from stridelab.envs.brax import _import_brax_envs

    env = _import_brax_envs().get_environment(env_name, backend=backend)
    reports: list[tuple[float, int, dict]] = []
    # Brax's published Ant settings (brax/training/learner.py, the README's notebook), with the
    # batch halved with the env count so one epoch's data is num_envs x unroll x 16 steps.
    train_fn = functools.partial(
        ppo.train, num_timesteps=steps, num_evals=num_evals, reward_scaling=10, episode_length=1000,
        normalize_observations=True, action_repeat=1, unroll_length=5, num_minibatches=32,
        num_updates_per_batch=4, discounting=0.97, learning_rate=3e-4, entropy_cost=1e-2,
        num_envs=num_envs, batch_size=num_envs // 2, seed=1, num_eval_envs=16,
        progress_fn=lambda step, metrics: reports.append((time.perf_counter(), step, dict(metrics))))
    train_fn(environment=env)
    # reports[0]: the evaluation before training; then one per chunk of training epochs. The
    # first chunk includes compilation.
    first = reports[1][0] - _T0 if len(reports) > 1 else float("nan")
    sps = float(reports[-1][2]["training/sps"])
    start = reports[0][0]  # after the first evaluation, before training: its clock's zero
    evals = [(int(st), t - start, float(m["eval/episode_reward"])) for t, st, m in reports]
    return {"evals": evals, "sps": sps, "first_update_s": first, "eval_return": float(reports[-1][2]["eval/episode_reward"]),
            "steps": int(reports[-1][1]), "devices": jax.local_device_count()}


def first_crossing(evals: list[tuple[int, float, float]], target: float) -> dict:
    """``evals``: (env steps, seconds since training began, eval return), in order -> the first
    at or above ``target`` (``reached`` false, the best seen, where none is)."""
    hit = next((e for e in evals if e[2] >= target), None)
    best = max(evals, key=lambda e: e[2]) if evals else (0, float("nan"), float("nan"))
    step, seconds, ret = hit or best
    return {"reached": hit is not None, "steps": step, "seconds": seconds, "eval_return": ret,
            "evals": [list(e) for e in evals]}


def stridelab_to_return(algo: str, args: argparse.Namespace) -> dict:
    """``stridelab train`` (Ant presets, every core) evaluated every ``--eval-every`` steps up to
    ``--to-steps``; seconds are the run's own clock (compilation in, evaluations out)."""
    from stridelab.config import build_config
    from stridelab.report import read_scalars
    from stridelab.train import train

    with tempfile.TemporaryDirectory() as run_dir:
        cfg = build_config({"algo": algo, "env": args.env, "num_envs": args.num_envs, "backend": args.backend,
                            "run_dir": run_dir, "progress": False, "total_steps": args.to_steps,
                            "eval_every": args.eval_every})
        summary = train(cfg)
        scalars = read_scalars(run_dir)
    clock = dict(scalars["charts/wall_clock"])
    evals = [(int(st), float(clock.get(st, float("nan"))), float(v)) for st, v in scalars["eval/episodic_return"]]
    return {**first_crossing(evals, args.time_to_return), "sps": summary["charts/SPS"]}


def brax_to_return(args: argparse.Namespace) -> dict:
    """Brax's PPO (its Ant settings, :func:`brax_ppo`) with an evaluation every ``--eval-every``."""
    out = brax_ppo(args.env, args.num_envs, args.backend, args.to_steps, args.brax_devices,
                   num_evals=max(2, args.to_steps // args.eval_every + 1))
    return {**first_crossing([tuple(e) for e in out.pop("evals")], args.time_to_return), **out}


def sb3(algo: str, env_id: str, steps: int) -> dict:
    import torch
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    venv = make_vec_env(env_id, n_envs=1, seed=1)
    if algo == "ppo":
        from stable_baselines3 import PPO as Algo
    else:
        from sb3_contrib import TRPO as Algo
    from stable_baselines3.common.logger import Logger

    model = Algo("MlpPolicy", venv, seed=1, device="cpu", verbose=0)
    model.set_logger(Logger(folder=None, output_formats=[]))  # else each learn() makes an SB3-<date> folder in /tmp
    model.learn(total_timesteps=2048)  # one rollout and one update: warm-up
    first = time.perf_counter() - _T0
    t = time.perf_counter()
    model.learn(total_timesteps=steps, reset_num_timesteps=False)
    return {"sps": steps / (time.perf_counter() - t), "first_update_s": first}


def run_part(args: argparse.Namespace) -> dict:
    part, n = args.part, args.num_envs
    if part in ("simulator", "simulator-again", "simulator-sharded"):
        out = simulator(args.env, n, args.backend, args.seconds, sharded=part == "simulator-sharded")
    elif part == "mujoco-simulator":
        out = mujoco_simulator(args.env, n, args.seconds)
    elif part == "pinned-processes":
        out = pinned_processes(args)
    elif part == "simulator-torch":
        out = simulator_torch(args.env, n, args.backend, args.seconds)
    elif part in ("stridelab-ppo-to-return", "stridelab-trpo-to-return"):  # before the other stridelab- parts
        out = stridelab_to_return(part.split("-")[1], args)
    elif part.startswith("stridelab-"):
        algo = part.split("-")[1]
        out = stridelab_training(algo, args.env, n, args.backend, args.iterations,
                                 fused=not part.endswith("stepwise"), overlap=not part.endswith("sequential"),
                                 shards="1" if part.endswith("1shard") else "auto")
    elif part == "brax-ppo":
        out = brax_ppo(args.env, n, args.backend, args.brax_steps, args.brax_devices)
    elif part == "brax-ppo-to-return":
        out = brax_to_return(args)
    elif part in ("sb3-ppo", "sb3-trpo"):
        out = sb3(part.split("-")[1], args.gym_env, args.sb3_steps)
    else:
        raise SystemExit(f"unknown part {part!r}; choose one of {', '.join(PARTS)}")
    out["peak_rss_mib"] = _peak_rss_mib()
    return out


# --- the orchestrating command -----------------------------------------------------------------

def child(args: argparse.Namespace, part: str, num_envs: int, iterations: int | None = None) -> dict:
    cmd = [sys.executable, __file__, "--part", part, "--num-envs", str(num_envs), "--env", args.env,
           "--backend", args.backend, "--iterations", str(iterations or args.iterations), "--seconds", str(args.seconds),
           "--brax-steps", str(args.brax_steps), "--sb3-steps", str(args.sb3_steps), "--gym-env", args.gym_env,
           "--brax-devices", str(args.brax_devices), "--time-to-return", str(args.time_to_return or 0),
           "--to-steps", str(args.to_steps), "--eval-every", str(args.eval_every)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if part in ("simulator", "simulator-again"):  # the one-device baseline, as before issue 21
        env["JAX_NUM_CPU_DEVICES"] = "1"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        print(f"  {part}: failed (exit {proc.returncode})\n{tail}", file=sys.stderr)
        return {"error": tail}
    return json.loads(lines[-1])


def table(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    results: dict = {"env": args.env, "backend": args.backend, "num_envs": args.num_envs, "gym_env": args.gym_env,
                     "cpu_count": os.cpu_count(), "parts": {}}
    # The machine is shared and its speed drifts by 10-20% within minutes, so the simulator is
    # measured between every two other measurements and each ratio is to the mean of the two
    # simulator runs around it (--no-bracket: the simulator only where --parts puts it, every
    # ratio to the mean of its runs).
    def is_sim(part: str) -> bool:
        return part in ("simulator", "simulator-again")

    others = [p for p in args.parts if not is_sim(p)]
    # stridelab's own training runs --repeats times (the ratios the acceptance is about);
    # the repeats come after one pass over every part, so each repeat sees the machine at another time.
    ours = [p for p in others if p.startswith("stridelab-")]
    others += [p for _ in range(args.repeats - 1) for p in ours]
    if args.bracket:
        order = ["simulator"] + [x for p in others for x in (p, "simulator")]
    else:  # the simulator only where --parts lists it: first and last
        order = [p for p in args.parts if p == "simulator"] + others + [p for p in args.parts if p == "simulator-again"]
    runs = [(part, child(args, "simulator" if is_sim(part) else part, args.num_envs))
            for part in tqdm(order, desc="throughput", unit="part")]

    def sim_sps(part_run: tuple[str, dict]) -> float | None:  # None for any other measurement
        return part_run[1].get("sps") if is_sim(part_run[0]) else None

    sims = [x for x in map(sim_sps, runs) if x]
    sim = sum(sims) / len(sims) if sims else None
    results["simulator_runs_sps"] = sims
    results["simulator_reference_sps"] = sim
    sim_results = [r for p, r in runs if is_sim(p)]
    if sim_results:
        results["parts"]["simulator"] = sim_results[0]
    repeats: dict[str, list[dict]] = {}
    for i, (part, r) in enumerate(runs):
        if is_sim(part):
            continue
        before = next((x for x in map(sim_sps, reversed(runs[:i])) if x), None)
        after = next((x for x in map(sim_sps, runs[i + 1 :]) if x), None)
        near = [x for x in (before, after) if x]
        r["simulator_around_sps"] = sum(near) / len(near) if args.bracket and near else sim
        if "sps" in r and r["simulator_around_sps"]:
            r["x_simulator"] = r["sps"] / r["simulator_around_sps"]
        repeats.setdefault(part, []).append(r)
    for part, rs in repeats.items():
        results["parts"][part] = median_of(rs)
    if len(sim_results) > 1:
        results["parts"]["simulator-again"] = sim_results[-1]
    for part, r in results["parts"].items():
        if "sps" in r and is_sim(part):
            r["x_simulator"] = r["sps"] / sim if sim else None
    brax = results["parts"].get("brax-ppo", {})
    for r in results["parts"].values():
        if "sps" in r:  # both against their own simulator runs, so the drift cancels
            r["x_brax_ppo"] = r["x_simulator"] / brax["x_simulator"] if brax.get("x_simulator") else None
        for cap, key in CAPACITY.items():  # against the physics capacity, drift cancelled the same way
            c = results["parts"].get(cap, {})
            if "sps" in r and r.get("x_simulator") and c.get("x_simulator"):
                r[key] = r["x_simulator"] / c["x_simulator"]
    print(f"\n{args.env} ({args.backend}), {args.num_envs} envs; {args.gym_env} for SB3")
    print(f"{'measurement':<26}{'steps/s':>10}{'x sim':>18}{'x sharded':>10}{'x pinned':>10}{'x Brax PPO':>12}"
          f"{'update %':>10}{'first update':>14}{'peak MiB':>10}{'CPU us/step':>13}")
    for part, r in results["parts"].items():
        if "sps" not in r:
            print(f"{part:<26}{'failed':>10}")
            continue
        upd = f"{100 * r['update_fraction']:.0f}%" if "update_fraction" in r else ""
        xs = f"{r['x_simulator']:.2f}" if r.get("x_simulator") else ""
        if len(r.get("repeats", [])) > 1:
            lo, hi = r["x_simulator_range"]
            xs = f"{r['x_simulator']:.2f} ({lo:.2f}-{hi:.2f})"
        xb = f"{r['x_brax_ppo']:.2f}" if r.get("x_brax_ppo") else ""
        xsh, xp = (f"{r[k]:.2f}" if r.get(k) else "" for k in CAPACITY.values())
        cpu = f"{r['cpu_us_per_step']:.1f}" if r.get("cpu_us_per_step") else ""
        print(f"{part:<26}{r['sps']:>10,.0f}{xs:>18}{xsh:>10}{xp:>10}{xb:>12}{upd:>10}{r['first_update_s']:>13.1f}s"
              f"{r['peak_rss_mib']:>10,.0f}{cpu:>13}")
    write(results, Path(args.out))


def median_of(runs: list[dict], key: str = "x_simulator") -> dict:
    """One row from repeated measurements of a part: the run whose ratio ``key`` is the median
    (the lower middle one for an even count), with every run's numbers under ``repeats`` and the
    ratio's range under ``<key>_range``. A single run is returned as it is."""
    ok = [r for r in runs if r.get(key)]
    if len(runs) == 1 or not ok:
        return runs[0]
    ok.sort(key=lambda r: r[key])
    row = dict(ok[(len(ok) - 1) // 2])
    row["repeats"] = runs
    row[f"{key}_range"] = [ok[0][key], ok[-1][key]]
    return row


def mujoco_table(args: argparse.Namespace) -> dict:
    """A native MuJoCo task (issue 30): the simulator (loop, batch, env) and training, in
    ``--repeats`` rounds, each training run between two simulator measurements."""
    from tqdm import tqdm

    order = ["mujoco-simulator"] + [x for _ in range(args.repeats) for p in args.parts for x in (p, "mujoco-simulator")]
    runs = [(part, child(args, part, args.num_envs)) for part in tqdm(order, desc="throughput", unit="part")]
    results = mujoco_results(runs)
    results.update(env=args.env, simulator="mujoco", num_envs=args.num_envs, seconds=args.seconds,
                   iterations=args.iterations, repeats=args.repeats, cpu_count=os.cpu_count())
    print()
    print(mujoco_report(results))
    write(results, Path(args.out))
    return results


def mujoco_results(runs: list[tuple[str, dict]]) -> dict:
    """``runs``: (part, its child's output) in the order measured -> each row's median ratios.
    Simulator parts: steps/s and ratio to the loop of the same measurement. Training: ratio to
    the mean ``batch`` (``x_simulator``) and ``env`` (``x_env``) of the simulator measurements just
    before and after it."""
    sims = [(i, r) for i, (p, r) in enumerate(runs) if p == "mujoco-simulator" and "loop" in r]
    parts: dict = {}
    for name in MUJOCO_SIM_PARTS:
        rows = [{"sps": r[name]["steps_per_s"], "us_per_step": r[name]["us_per_step"],
                 "x_loop": r[name]["steps_per_s"] / r["loop"]["steps_per_s"]} for _, r in sims]
        if rows:
            parts[name] = _median_row(rows, "x_loop")
    repeats: dict[str, list[dict]] = {}
    for i, (part, r) in enumerate(runs):
        if part == "mujoco-simulator":
            continue
        near = [s for s in (_nearest(sims, i, -1), _nearest(sims, i, +1)) if s is not None]
        if "sps" in r and near:
            for key, name in (("x_simulator", "batch"), ("x_env", "env")):
                around = sum(s[name]["steps_per_s"] for s in near) / len(near)
                r[f"{name}_around_sps"], r[key] = around, r["sps"] / around
        repeats.setdefault(part, []).append(r)
    for part, rs in repeats.items():
        # The row shown is the round whose acceptance ratio is the median; each ratio also gets
        # its own median and range over the rounds that have it (a replay that did not repeat
        # its run's states has no x_replay).
        parts[part] = row = median_of(rs, "x_replay" if any(r.get("x_replay") for r in rs) else "x_simulator")
        for key in ("x_simulator", "x_env", "x_replay"):
            xs = sorted(r[key] for r in rs if r.get(key) is not None)
            if len(rs) > 1 and xs:
                row[f"{key}_median"], row[f"{key}_range"] = xs[(len(xs) - 1) // 2], [xs[0], xs[-1]]
    busy = [r["others_busy"] for _, r in runs if "others_busy" in r]
    mujoco_version = next((r["mujoco"] for _, r in sims), None)
    return {"parts": parts, "runs": [{"part": p, **r} for p, r in runs], "mujoco": mujoco_version,
            "threads": next((r["threads"] for _, r in sims), None),
            "others_busy_range": [min(busy), max(busy)] if busy else None,
            "acceptance": {"batch_x_loop": parts.get("batch", {}).get("x_loop"),
                           **{f"{p}_x_replay": _median(parts[p], "x_replay") for p in MUJOCO_TRAINERS if p in parts},
                           **{f"{p}_x_simulator": _median(parts[p], "x_simulator") for p in MUJOCO_TRAINERS
                              if p in parts}}}


def _median(row: dict, key: str) -> float | None:
    """A row's median ``key`` over the rounds (the row's own value for a single round)."""
    return row.get(f"{key}_median", row.get(key))


def _nearest(sims: list[tuple[int, dict]], i: int, direction: int) -> dict | None:
    """The simulator measurement just before (``direction`` -1) or after (+1) run ``i``."""
    found = [r for j, r in sims if (j - i) * direction > 0]
    return (found[-1] if direction < 0 else found[0]) if found else None


def _median_row(rows: list[dict], key: str) -> dict:
    """The row whose ``key`` is the median (the lower middle one), with the range and every row."""
    ordered = sorted(rows, key=lambda r: r[key])
    row = dict(ordered[(len(ordered) - 1) // 2])
    row[f"{key}_range"], row["repeats"] = [ordered[0][key], ordered[-1][key]], rows
    return row


# Issue 30's acceptance: the batched simulator >= 1.8 x the loop, training >= 0.6 x the simulator
# alone on the same batch: the simulator replaying the run's own steps (benchmarks/env_replay.py;
# under random targets the robots do less work per step than under a policy's actions).
MUJOCO_GOALS = {"batch": ("x_loop", 1.8), "stridelab-ppo": ("x_replay", 0.6), "stridelab-trpo": ("x_replay", 0.6)}


def mujoco_report(results: dict) -> str:
    """The table :func:`mujoco_table` prints."""
    busy = results.get("others_busy_range")
    lines = [f"{results.get('env')} (native MuJoCo {results.get('mujoco')}), {results.get('num_envs')} envs, "
             f"{results.get('threads')} thread(s) for the batch; median of {results.get('repeats')} round(s)"
             + (f"; other programs kept {busy[0]:.2f}-{busy[1]:.2f} cores busy" if busy else "")]
    if busy and busy[1] > 0.2:
        lines.append("  (a busy machine: the ratios below are not a quiet machine's)")

    def ratio(r: dict, key: str) -> str:
        if r.get(key) is None:
            return ""
        lo_hi = r.get(f"{key}_range")
        return f"{r[key]:.2f}" + (f" ({lo_hi[0]:.2f}-{lo_hi[1]:.2f})" if lo_hi and len(r.get("repeats", [])) > 1 else "")

    lines.append(f"{'measurement':<19}{'steps/s':>9}{'us/step':>9}{'x loop':>18}{'x simulator':>18}{'x env':>18}"
                 f"{'x replay':>18}{'rollout us':>11}{'update us':>10}{'CPU us/step':>12}{'first update':>13}")
    labels = {"loop": "loop (1 thread)", "batch": "batch (simulator)", "env": "env"}
    for part, r in results["parts"].items():
        if "sps" not in r:
            lines.append(f"{part:<19}{'failed':>9}")
            continue
        medians = {key: _median(r, key) for key in ("x_simulator", "x_env", "x_replay")}
        r = dict(r, **medians)
        us = 1e6 / r["sps"]
        phases = [f"{us * r[k]:.1f}" if k in r else "" for k in ("rollout_fraction", "update_fraction")]
        cpu = f"{r['cpu_us_per_step']:.1f}" if r.get("cpu_us_per_step") else ""
        first = f"{r['first_update_s']:.1f}s" if "first_update_s" in r and part.startswith("stridelab-") else ""
        lines.append(f"{labels.get(part, part):<19}{r['sps']:>9,.0f}{us:>9.1f}{ratio(r, 'x_loop'):>18}"
                     f"{ratio(r, 'x_simulator'):>18}{ratio(r, 'x_env'):>18}{ratio(r, 'x_replay'):>18}"
                     f"{phases[0]:>11}{phases[1]:>10}{cpu:>12}{first:>13}")
    verdicts = []
    for part, (key, goal) in MUJOCO_GOALS.items():
        value = _median(results["parts"].get(part, {}), key)
        if value is not None:
            verdicts.append(f"{part} {key.replace('_', ' ')} {value:.2f} (>= {goal}: {'met' if value >= goal else 'NOT met'})")
    lines.append("acceptance: " + "; ".join(verdicts))
    if any(run.get("replay_identical") is False for run in results.get("runs", [])):
        lines.append("  (a replay's rewards differed from its run's: it stepped other states, and x replay leaves that "
                     "round out)")
    return "\n".join(lines)


def time_to_return(args: argparse.Namespace) -> None:
    """Wall-clock to the first evaluation return >= ``--time-to-return``, each trainer in turn."""
    parts = [f"{t}-to-return" for t in args.trainers]
    results = {"env": args.env, "num_envs": args.num_envs, "target": args.time_to_return,
               "eval_every": args.eval_every, "to_steps": args.to_steps, "parts": {}}
    print(f"{args.env}: first evaluation >= {args.time_to_return:g} (every {args.eval_every:,} steps, "
          f"at most {args.to_steps:,}), {args.num_envs} envs")
    for part in parts:
        r = results["parts"][part] = child(args, part, args.num_envs)
        if "seconds" in r:
            when = "reached" if r["reached"] else "not reached; best"
            print(f"{part:<26}{when} at {r['steps']:>10,} steps, {r['seconds']:>7.0f} s (eval {r['eval_return']:.0f})",
                  flush=True)
    write(results, Path(args.out.replace(".json", "_time_to_return.json")))


def scaling(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    parts = [p for p in args.parts if p in ("simulator", "stridelab-ppo", "stridelab-trpo")]
    grid = [(n, p) for n in args.num_envs_list for p in parts]
    results: dict = {"env": args.env, "backend": args.backend, "points": []}
    for n, part in tqdm(grid, desc="scaling", unit="point"):
        # At least 3 timed iterations, at most about 400k steps per training point.
        r = child(args, part, n, iterations=max(3, min(args.iterations, 400_000 // (16 * n))))
        results["points"].append({"num_envs": n, "part": part, **r})
    out = Path(args.out.replace(".json", "_scaling.json"))
    write(results, out)
    plot_scaling(results, Path(args.plot))


def plot_scaling(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    labels = {"simulator": "simulator alone (random actions)", "stridelab-ppo": "stridelab PPO training",
              "stridelab-trpo": "stridelab TRPO training"}
    for part, label in labels.items():
        pts = [p for p in results["points"] if p["part"] == part and "sps" in p]
        if pts:
            ax.plot([p["num_envs"] for p in pts], [p["sps"] for p in pts], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("parallel envs (num_envs)")
    ax.set_ylabel("env steps per second")
    ax.set_title(f"Brax {results['env']} ({results['backend']}) on this machine")
    ax.grid(True, alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def write(results: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


def _is_native_mujoco(env_name: str) -> bool:
    """Whether ``env_name`` is one of native MuJoCo's tasks (Go1), not Brax's."""
    try:
        from stridelab.envs.mujoco import env_names
    except ImportError:  # no mujoco installed: a Brax run needs none
        return False
    return env_name in env_names()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="ant")
    p.add_argument("--backend", default="spring")
    p.add_argument("--num-envs", type=int, default=None,
                   help="default: 2048 on Brax, the task's preset on native MuJoCo (256 for Go1)")
    p.add_argument("--parts", nargs="+", default=None, choices=PARTS,
                   help=f"default: all of them on Brax; {' '.join(MUJOCO_TRAINERS)} on native MuJoCo (the simulator "
                        f"is always measured there)")
    p.add_argument("--seconds", type=float, default=None,
                   help="timed seconds for the simulator parts (default 15 on Brax; 4 for each of loop, batch and env "
                        "on native MuJoCo)")
    p.add_argument("--iterations", type=int, default=12, help="training iterations after the first")
    p.add_argument("--brax-steps", type=int, default=1_000_000, help="env steps for Brax's PPO")
    p.add_argument("--sb3-steps", type=int, default=10_240, help="timed env steps for SB3")
    p.add_argument("--gym-env", default="Ant-v5", help="the same robot in Gymnasium, for SB3")
    p.add_argument("--brax-devices", type=int, default=None, help="XLA CPU devices for Brax's PPO (default: one per core)")
    p.add_argument("--time-to-return", type=float, default=0.0,
                   help="instead of the table: seconds to the first evaluation return >= this")
    p.add_argument("--to-steps", type=int, default=20_000_000, help="--time-to-return: env steps at most")
    p.add_argument("--trainers", nargs="+", default=TRAINERS, choices=TRAINERS, help="--time-to-return: which")
    p.add_argument("--eval-every", type=int, default=500_000, help="--time-to-return: steps between evaluations")
    p.add_argument("--repeats", type=int, default=3,
                   help="times each stridelab training part is measured (native MuJoCo: rounds of the simulator and "
                        "each training part); the table shows the median ratio")
    p.add_argument("--no-bracket", dest="bracket", action="store_false",
                   help="measure the simulator only where --parts says, not between every two measurements")
    p.add_argument("--scaling", action="store_true", help="steps/s against --num-envs-list instead of the table")
    p.add_argument("--num-envs-list", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048, 4096, 8192])
    p.add_argument("--plot", default="docs/img/throughput_scaling.png")
    p.add_argument("--out", default=None,
                   help="default: benchmarks/results/throughput.json on Brax, throughput_ENV.json on native MuJoCo")
    p.add_argument("--part", default=None, help=argparse.SUPPRESS)  # internal: run one measurement
    args = p.parse_args()
    if args.repeats < 1:
        p.error(f"--repeats {args.repeats}: must be at least 1")
    # A native MuJoCo task (asked only here, not in a measuring child: Brax's parts import nothing of it).
    native = args.part is None and _is_native_mujoco(args.env)
    if native:
        if args.scaling or args.time_to_return:
            p.error(f"--env {args.env} (native MuJoCo): --scaling and --time-to-return are Brax's; the table only")
        parts = args.parts or list(MUJOCO_TRAINERS)
        if any(part not in MUJOCO_PARTS for part in parts):
            p.error(f"--env {args.env} (native MuJoCo) measures the simulator and {', '.join(MUJOCO_PARTS)}; "
                    f"not {', '.join(x for x in parts if x not in MUJOCO_PARTS)}")
        args.parts = parts
        if args.num_envs is None:
            from stridelab.config import build_config

            args.num_envs = build_config({"algo": "ppo", "env": args.env, "run_dir": "unused"}).num_envs
        args.seconds = 4.0 if args.seconds is None else args.seconds
        args.out = args.out or f"benchmarks/results/throughput_{args.env}.json"
    args.parts = args.parts or PARTS
    args.num_envs = 2048 if args.num_envs is None else args.num_envs
    args.seconds = 15.0 if args.seconds is None else args.seconds
    args.out = args.out or "benchmarks/results/throughput.json"
    if args.brax_devices is None:
        from stridelab.cores import affinity

        args.brax_devices = len(affinity())
    if args.part:
        print(json.dumps(run_part(args)))
    elif args.time_to_return:
        time_to_return(args)
    elif native:
        mujoco_table(args)
    elif args.scaling:
        scaling(args)
    else:
        table(args)


if __name__ == "__main__":
    main()
