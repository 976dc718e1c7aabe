"""Milliseconds of one PPO update (policy then value net, the presets' epochs and minibatches) on
a batch of random observations of the task's sizes, on N torch threads, beside the rate of one
minibatch-sized matrix product (512x128 by 128x128); ``--profile`` adds torch.profiler's table
of the operators. Where PPO's update time goes, apart from the rollout
(docs/benchmarks.md, "Native MuJoCo simulator"):

    python benchmarks/update_cost.py --threads 1 2 --profile
"""

import argparse
import time

import torch

from stridelab.algos import make_algorithm
from stridelab.config import build_config
from stridelab.envs import make_env
from stridelab.models import build_agent
from stridelab.ops import gaussian_log_prob
from stridelab.rollout import Batch


def random_batch(agent, size: int, generator: torch.Generator) -> Batch:
    obs = torch.randn(size, agent.obs_dim, generator=generator)
    with torch.no_grad():
        mean, std = agent.dist_params(obs)
        act = mean + std * torch.randn(mean.shape, generator=generator)
        logp = gaussian_log_prob(mean, std, act)
    values, advantages, returns = (torch.randn(size, generator=generator) for _ in range(3))
    return Batch(obs, act, logp, mean, std, values, advantages, returns)


def matmul_gflops(repeats: int = 1000) -> float:
    a, b = torch.randn(512, 128), torch.randn(128, 128)
    for _ in range(10):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * 512 * 128 * 128 * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="Go1JoystickFlatTerrain")
    p.add_argument("--threads", type=int, nargs="+", default=[1])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    cfg = build_config({"env": args.env, "algo": "ppo"})
    env = make_env(args.env, 1)  # for its spec: sizes, and the reflection of a symmetric policy
    agent = build_agent(cfg, env.spec)
    env.close()
    algo = make_algorithm(agent, cfg)
    batch = random_batch(agent, cfg.num_envs * cfg.num_steps, torch.Generator().manual_seed(0))

    def update() -> None:
        algo.update_policy(batch)
        algo.update_value(batch)

    for n in args.threads:
        torch.set_num_threads(n)
        update()  # warm-up
        start = time.perf_counter()
        for _ in range(args.repeats):
            update()
        seconds = (time.perf_counter() - start) / args.repeats
        print(f"{n} thread(s): {seconds * 1e3:.0f} ms per update of {len(batch):,} samples, "
              f"{seconds / len(batch) * 1e6:.1f} us per env step; {matmul_gflops():.0f} GFLOP/s in a 512x128x128 product")
    if args.profile:
        from torch.profiler import profile

        with profile() as prof:
            update()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
