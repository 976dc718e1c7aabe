"""XLA's CPU code generation for Brax: compile time and speed with stridelab's
``CPU_COMPILER_OPTIONS`` against XLA's defaults, in one process, the timed scans alternated.

    python benchmarks/compile_options.py --env ant --backend spring --num-envs 2048 --rounds 10

Prints, for a vmapped ``reset`` and a jitted 16-step scan of ``step`` with random actions:
compile time both ways (the persistent compilation cache is off here), steps per second both
ways, and the median of the per-round time ratios (ours / XLA's default).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ["STRIDELAB_JAX_CACHE"] = "off"  # every compilation timed from scratch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="ant")
    p.add_argument("--backend", default="spring")
    p.add_argument("--num-envs", type=int, default=2048)
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args()

    import jax

    from stridelab.envs.brax import CPU_COMPILER_OPTIONS, _import_brax_envs

    env = _import_brax_envs().get_environment(args.env, backend=args.backend)
    n = args.num_envs

    def scan(state, key):  # noqa: ANN001, ANN202
        def body(s, k):  # noqa: ANN001, ANN202
            a = jax.random.uniform(k, (n, env.action_size), minval=-1.0, maxval=1.0)
            return jax.vmap(env.step)(s, a), ()
        return jax.lax.scan(body, state, jax.random.split(key, 16))[0]

    runs = {}
    for label, opts in (("XLA default", None), ("ours", dict(CPU_COMPILER_OPTIONS))):
        t = time.perf_counter()
        state = jax.block_until_ready(jax.jit(jax.vmap(env.reset), compiler_options=opts)(
            jax.random.split(jax.random.PRNGKey(0), n)))
        t_reset = time.perf_counter() - t
        t = time.perf_counter()
        fn = jax.jit(scan, compiler_options=opts)
        jax.block_until_ready(fn(state, jax.random.PRNGKey(1)))
        runs[label] = {"fn": fn, "state": state, "reset": t_reset, "scan": time.perf_counter() - t, "times": []}
    for r in range(args.rounds):
        for run in runs.values():
            t = time.perf_counter()
            jax.block_until_ready(run["fn"](run["state"], jax.random.PRNGKey(r)))
            run["times"].append(time.perf_counter() - t)
    d, o = runs["XLA default"], runs["ours"]
    ratio = statistics.median(b / a for a, b in zip(d["times"], o["times"]))
    print(f"{args.env}/{args.backend}, {n} envs, {args.rounds} rounds")
    print(f"reset compile       {d['reset']:6.1f} s -> {o['reset']:6.1f} s")
    print(f"step-scan compile   {d['scan']:6.1f} s -> {o['scan']:6.1f} s")
    print(f"steps/s             {16 * n / statistics.median(d['times']):8.0f} -> {16 * n / statistics.median(o['times']):8.0f}")
    print(f"time per scan, ours / XLA's default (median of paired rounds): {ratio:.3f}")


if __name__ == "__main__":
    main()
