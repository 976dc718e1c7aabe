"""Where a native MuJoCo rollout's time goes, and whether training slows the physics down.

    python benchmarks/rollout_pieces.py train --env Go1JoystickFlatTerrain --algo ppo --total-steps 131072 \
        --eval-every 0 --eval-episodes 0 --run-dir /tmp/pieces     # any `stridelab train` arguments
    python benchmarks/rollout_pieces.py physics --rounds 6

``train``: ``stridelab train`` in this process with timers around the rollout's pieces
(``BatchedSim.step``: the physics; ``MujocoVecEnv.step`` and its ``_restart``; the policy's
``ActorCritic.act`` and ``canonical``); prints each piece's seconds per env step. ``physics``:
one process steps a Go1 batch (the preset's 256 envs) 32 times per measurement, alone, with a
policy's forward pass between steps, and after a PPO-sized update, interleaved for ``--rounds``
rounds; prints the medians. Timers cost about a microsecond per call: read differences of a few
microseconds per env step, not less.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from collections.abc import Callable


def timed_train(args: list[str]) -> None:
    import stridelab.envs.mujoco as mj
    import stridelab.models as models
    import stridelab.rollout as rollout
    from stridelab.cli import main

    seconds: dict[str, float] = collections.defaultdict(float)
    calls: collections.Counter = collections.Counter()
    num_envs: list[int] = []

    def wrap(owner: object, name: str, key: str) -> None:
        inner = getattr(owner, name)

        def timed(*a, **k):  # noqa: ANN002, ANN003, ANN202
            t = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                seconds[key] += time.perf_counter() - t
                calls[key] += 1
                if key == "physics" and not num_envs:
                    num_envs.append(a[0].num_envs)

        setattr(owner, name, timed)

    pieces = {"rollout": (rollout, "_step_by_step"), "env.step": (mj.MujocoVecEnv, "step"),
              "physics": (mj.BatchedSim, "step"), "restart": (mj.MujocoVecEnv, "_restart"),
              "agent.act": (models.ActorCritic, "act_and_see"), "canonical": (models.ActorCritic, "_seen")}
    for key, (owner, name) in pieces.items():
        wrap(owner, name, key)
    try:
        main(args)
    finally:
        steps = calls["physics"] * (num_envs[0] if num_envs else 0)
        for key in pieces:
            per_step = seconds[key] / steps * 1e6 if steps else float("nan")
            print(f"{key:10s} {per_step:7.2f} us per env step  ({calls[key]} calls)")


def physics_in_context(rounds: int) -> None:
    import torch

    from stridelab.envs.go1 import Randomization
    from stridelab.envs.mujoco import make_vec_env

    torch.set_num_threads(2)
    env = make_vec_env("Go1JoystickFlatTerrain", 256, randomization=Randomization.all_on())
    env.reset(0)
    sim = env.sim
    net = torch.nn.Sequential(torch.nn.Linear(48, 128), torch.nn.ELU(), torch.nn.Linear(128, 128), torch.nn.ELU(),
                              torch.nn.Linear(128, 24))
    obs, batch = torch.randn(256, 48), torch.randn(2048, 48)
    opt = torch.optim.Adam(net.parameters())

    def steps(between: Callable[[], None] | None = None) -> float:
        """us per env step of 32 physics calls, ``between`` run before each on one torch thread."""
        total = 0.0
        torch.set_num_threads(1)
        for _ in range(32):
            if between is not None:
                between()
            t = time.perf_counter()
            sim.step(5)
            total += time.perf_counter() - t
        torch.set_num_threads(2)
        return total / 32 / sim.num_envs * 1e6

    def policy() -> None:
        with torch.no_grad():
            net(obs)

    def update() -> None:  # 16 minibatch steps of 2,048, as PPO's 4 epochs x 4 minibatches
        for _ in range(16):
            loss = net(batch).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    cases = {"alone": lambda: steps(), "policy between steps": lambda: steps(policy),
             "after an update": lambda: (update(), steps(policy))[1]}
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            results[name].append(case())
    for name, values in results.items():
        print(f"{name:22s} median {statistics.median(values):6.1f} us per env step  "
              f"(rounds: {', '.join(f'{v:.1f}' for v in values)})")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "train":
        timed_train(["train", *sys.argv[2:]])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    sub.add_parser("train", help="stridelab train with timers (its own arguments follow)")
    ph = sub.add_parser("physics", help="the physics alone and beside training's phases, interleaved")
    ph.add_argument("--rounds", type=int, default=6)
    args = p.parse_args()
    physics_in_context(args.rounds)


if __name__ == "__main__":
    main()
