"""Where one PPO iteration's time goes, next to the simulator alone, in one process.

    python benchmarks/iteration_parts.py [--rounds 8] [--env ant] [--num-envs 2048]

Each round times, one after the other: the simulator alone (Brax's ``step``, vmapped, random
actions, the same 16-step jitted scan as ``throughput.py``'s ``simulator``) for one iteration's
steps; stridelab's fused rollout of the same size (policy inside the compiled loop); ``make_batch``;
and ``PPO.update`` split where it calls ``between``: the policy's pass (all threads) and the
critic's pass (here with nothing beside it, so on all threads too). Alternating the parts
within seconds keeps the machine's drift out of their ratios; the medians are printed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="ant")
    p.add_argument("--backend", default="spring")
    p.add_argument("--num-envs", type=int, default=2048)
    p.add_argument("--rounds", type=int, default=8)
    args = p.parse_args()

    import jax
    import torch

    from stridelab.config import build_config
    from stridelab.envs import make_env
    from stridelab.envs.brax import _import_brax_envs, jit
    from stridelab.rollout import RolloutStorage, make_batch, start_collect
    from stridelab.algos import make_algorithm
    from stridelab.models import build_agent

    cfg = build_config({"algo": "ppo", "env": args.env, "num_envs": args.num_envs, "backend": args.backend,
                        "run_dir": "unused", "progress": False})
    n, t_steps = cfg.num_envs, cfg.num_steps
    raw = _import_brax_envs().get_environment(args.env, backend=args.backend)
    step = jax.vmap(raw.step)

    def scan(state, key):  # noqa: ANN001, ANN202
        def body(s, k):  # noqa: ANN001, ANN202
            return step(s, jax.random.uniform(k, (n, raw.action_size), minval=-1.0, maxval=1.0)), ()
        return jax.lax.scan(body, state, jax.random.split(key, t_steps))[0]

    simulate = jit(scan)  # the compiler options stridelab's own programs use
    state = jit(jax.vmap(raw.reset))(jax.random.split(jax.random.PRNGKey(0), n))
    env = make_env(args.env, n, backend=args.backend)
    agent = build_agent(cfg, env.spec)
    algo = make_algorithm(agent, cfg)
    storage = RolloutStorage(t_steps, n, env.spec.obs_dim, env.spec.act_dim, torch.device("cpu"))
    obs = env.reset(0)

    times: dict[str, list[float]] = {k: [] for k in ("simulator", "rollout", "batch", "policy pass", "critic pass")}
    for r in range(args.rounds + 1):  # round 0 compiles
        t = time.perf_counter()
        state = jax.block_until_ready(simulate(state, jax.random.PRNGKey(r)))
        t_sim = time.perf_counter() - t
        t = time.perf_counter()
        obs = start_collect(env, agent, obs, storage, fused_seed=r)()
        t_roll = time.perf_counter() - t
        t = time.perf_counter()
        batch = make_batch(agent, storage, cfg.gamma, cfg.gae_lambda)
        t_batch = time.perf_counter() - t
        t = time.perf_counter()
        algo.update_policy(batch)
        mark = time.perf_counter()
        algo.update_value(batch)
        end = time.perf_counter()
        if r:
            for key, value in zip(times, (t_sim, t_roll, t_batch, mark - t, end - mark)):
                times[key].append(value)
    print(f"{args.env} ({args.backend}), {n} envs x {t_steps} steps = {n * t_steps:,} steps per iteration; "
          f"median of {args.rounds} rounds (min-max):")
    for key, values in times.items():
        print(f"  {key:<12} {np.median(values):6.3f} s  ({min(values):.3f}-{max(values):.3f})")
    sim, roll = np.array(times["simulator"]), np.array(times["rollout"])
    print(f"  rollout / simulator, paired: {np.median(roll / sim):.3f}")


if __name__ == "__main__":
    main()
