"""Throughput on Brax Ant: the simulator alone next to stridelab's PPO and TRPO training.

One command, one process, so the ratios are measured side by side on the same (noisy) machine:

    python benchmarks/throughput.py --num-envs 2048 --out benchmarks/results/throughput.json

Prints a table and writes JSON. Compilation is excluded from the steady-state numbers and
reported separately as the time to the first update.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch


def simulator_alone(env_name: str, num_envs: int, backend: str, steps: int) -> float:
    """Env steps per second with uniform random actions through stridelab's torch adapter."""
    from stridelab.envs import make_env

    env = make_env(env_name, num_envs, backend=backend)
    env.reset(0)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):  # compile and warm up
        env.step(torch.rand(num_envs, env.spec.act_dim, generator=g) * 2 - 1)
    t = time.perf_counter()
    for _ in range(steps):
        res = env.step(torch.rand(num_envs, env.spec.act_dim, generator=g) * 2 - 1)
    res.obs.sum().item()
    sps = num_envs * steps / (time.perf_counter() - t)
    env.close()
    return sps


def training(algo: str, env_name: str, num_envs: int, backend: str, iterations: int) -> dict:
    from stridelab.config import build_config
    from stridelab.train import train

    with tempfile.TemporaryDirectory() as run_dir:
        cfg = build_config({"algo": algo, "env": env_name, "num_envs": num_envs, "backend": backend,
                            "run_dir": run_dir, "progress": False, "eval_episodes": 0})
        cfg.total_steps = cfg.batch_size * (iterations + 1)
        t = time.perf_counter()
        summary = train(cfg)
        summary["time/total_s"] = time.perf_counter() - t
    steady = summary["time/rollout_s"] + summary["time/batch_s"] + summary["time/update_s"]
    return {
        "sps": summary["time/steady_sps"],
        "first_update_s": summary["time/first_update_s"],
        "rollout_fraction": summary["time/rollout_s"] / steady,
        "batch_fraction": summary["time/batch_s"] / steady,
        "update_fraction": summary["time/update_s"] / steady,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="ant")
    p.add_argument("--backend", default="spring")
    p.add_argument("--num-envs", type=int, default=2048)
    p.add_argument("--sim-steps", type=int, default=100)
    p.add_argument("--iterations", type=int, default=12, help="training iterations after the first")
    p.add_argument("--algos", nargs="+", default=["ppo", "trpo"])
    p.add_argument("--out", default="benchmarks/results/throughput.json")
    args = p.parse_args()

    results: dict = {"env": args.env, "backend": args.backend, "num_envs": args.num_envs,
                     "torch_threads": torch.get_num_threads()}
    results["simulator_sps"] = simulator_alone(args.env, args.num_envs, args.backend, args.sim_steps)
    for algo in args.algos:
        results[algo] = training(algo, args.env, args.num_envs, args.backend, args.iterations)
        results[algo]["ratio_to_simulator"] = results[algo]["sps"] / results["simulator_sps"]
    results["simulator_sps_after"] = simulator_alone(args.env, args.num_envs, args.backend, args.sim_steps)
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"{args.env} ({args.backend}), {args.num_envs} envs")
    print(f"{'what':<28}{'steps/s':>10}{'x sim':>8}{'update %':>10}{'first update':>14}")
    sim = results["simulator_sps"]
    print(f"{'simulator alone (random)':<28}{sim:>10,.0f}{1.0:>8.2f}")
    for algo in args.algos:
        r = results[algo]
        print(f"{'stridelab ' + algo.upper() + ' training':<28}{r['sps']:>10,.0f}{r['ratio_to_simulator']:>8.2f}"
              f"{100 * r['update_fraction']:>9.1f}%{r['first_update_s']:>13.1f}s")
    print(f"{'simulator alone, again':<28}{results['simulator_sps_after']:>10,.0f}")
    print(f"peak memory: {results['peak_rss_mib']:.0f} MiB")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
