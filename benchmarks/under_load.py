"""The update phase's time on a quiet machine and beside a nice-19 busy loop on one core (issue 21).

    python benchmarks/under_load.py                 # PPO, Ant's sizes, 2048 envs x 16 steps
    python benchmarks/under_load.py --algo trpo --repeats 7

Times stridelab's update (the batch: normalizer, values, GAE; then the policy's and the value
net's update) on a synthetic Ant-sized rollout, in one process, with torch's threads chosen two
ways: ``all`` (torch's own count, one per core: stridelab before issue 21) and ``auto`` (the
runner's choice: the cores other programs left idle during the previous update,
:class:`stridelab.cores.CoreMeter`). Each is timed quiet, then while ``taskset -c <last core>
nice -n 19`` runs a busy loop. Prints one row per choice: the median seconds quiet and loaded and
their ratio (the issue asks for at most 1.5 x). Linux only (``taskset``, ``/proc/stat``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from collections.abc import Iterator

import torch

from stridelab.algos import make_algorithm
from stridelab.config import build_config
from stridelab.cores import CoreMeter, affinity
from stridelab.envs.base import EnvSpec
from stridelab.models import build_agent
from stridelab.rollout import RolloutStorage, make_batch

OBS_DIM, ACT_DIM = 27, 8  # Brax Ant


def synthetic_rollout(num_envs: int, num_steps: int) -> RolloutStorage:
    g = torch.Generator().manual_seed(0)
    s = RolloutStorage(num_steps, num_envs, OBS_DIM, ACT_DIM, torch.device("cpu"))
    s.obs.normal_(generator=g)
    s.final_obs.normal_(generator=g)
    s.actions.normal_(generator=g)
    s.rewards.normal_(generator=g)
    s.dones[-1] = True
    return s


def time_updates(algo_name: str, storage: RolloutStorage, repeats: int, threads: str) -> list[tuple[float, float]]:
    """Wall-clock and CPU seconds of each of ``repeats`` updates (after one warm-up), torch's
    threads per ``threads``."""
    cfg = build_config({"env": "ant", "algo": algo_name, "num_envs": storage.obs.shape[1],
                        "num_steps": storage.num_steps})
    spec = EnvSpec(name="ant", simulator="brax", obs_dim=OBS_DIM, act_dim=ACT_DIM, action_low=(-1.0,) * ACT_DIM,
                   action_high=(1.0,) * ACT_DIM, dt=0.05, episode_length=1000)
    torch.manual_seed(0)
    agent = build_agent(cfg, spec)
    algo = make_algorithm(agent, cfg)
    most, meter, times = torch.get_num_threads(), CoreMeter(), []
    for i in range(repeats + 1):
        time.sleep(0.5)  # the simulator's share of an iteration, in which the meter sees the others
        torch.set_num_threads(most if threads == "all" else min(most, meter.idle_cores()))
        t, cpu = time.perf_counter(), time.process_time()
        batch = make_batch(agent, storage, cfg.gamma, cfg.gae_lambda)
        algo.update_policy(batch)
        algo.update_value(batch)
        if i:
            times.append((time.perf_counter() - t, time.process_time() - cpu))
        meter.others_busy()  # the update's own time is ours: start the next window after it
    torch.set_num_threads(most)
    return times


@contextmanager
def busy_core(core: int) -> Iterator[None]:
    """A nice-19 Python busy loop pinned to ``core``."""
    proc = subprocess.Popen(["taskset", "-c", str(core), "nice", "-n", "19", sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        yield
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algo", default="ppo")
    p.add_argument("--num-envs", type=int, default=2048)
    p.add_argument("--num-steps", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5, help="timed updates per condition (median shown)")
    args = p.parse_args()
    storage = synthetic_rollout(args.num_envs, args.num_steps)
    core = affinity()[-1]
    print(f"{args.algo} update, {args.num_envs} x {args.num_steps} batch, {len(affinity())} cores, "
          f"torch threads {torch.get_num_threads()}; busy loop: nice 19 on core {core}")
    # CPU us/step: the quiet update's CPU time (every torch thread) per env step of the batch
    print(f"{'threads':<8}{'quiet s':>10}{'loaded s':>10}{'x quiet':>9}{'CPU us/step':>13}")
    steps = args.num_envs * args.num_steps
    for threads in ("all", "auto"):
        quiet_runs = time_updates(args.algo, storage, args.repeats, threads)
        quiet = statistics.median(w for w, _ in quiet_runs)
        cpu = statistics.median(c for _, c in quiet_runs) / steps * 1e6
        with busy_core(core):
            loaded = statistics.median(w for w, _ in time_updates(args.algo, storage, args.repeats, threads))
        print(f"{threads:<8}{quiet:>10.3f}{loaded:>10.3f}{loaded / quiet:>9.2f}{cpu:>13.1f}", flush=True)


if __name__ == "__main__":
    main()
