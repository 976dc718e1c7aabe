"""Peers on the same MuJoCo task and budget: Stable-Baselines3 PPO and sb3-contrib TRPO.

Settings are rl-baselines3-zoo's for MuJoCo, which stridelab's Gymnasium presets started from
(since measured per task: Hopper-v5 discounts by 0.995 and Ant-v5 starts at std 0.3 in stridelab,
docs/design.md; the peers keep their libraries' settings):

* PPO: SB3's defaults (2048 steps per update, 10 epochs of 64-sample minibatches, lr 3e-4,
  GAE 0.95, discount 0.99) with observations and rewards normalized (zoo's ``normalize: true``).
* TRPO: zoo's tuned MuJoCo block (2 envs x 1024 steps, CG 25 steps, critic 20 epochs of 128-sample
  minibatches at lr 1e-3, normalized), target KL 0.04 on HalfCheetah.

Each run trains on one core (as ``stridelab compare`` runs ours), then evaluates the
deterministic policy on 16 fresh episodes:

    pip install -e '.[bench]'
    python benchmarks/sb3_baselines.py --env Hopper-v5 --algo ppo --cpu 0 --out benchmarks/results/sb3_Hopper-v5_ppo_s1.json

Prints one JSON line and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def build(algo: str, env_id: str, seed: int):  # noqa: ANN201
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    if algo == "ppo":
        from stable_baselines3 import PPO

        venv = VecNormalize(make_vec_env(env_id, n_envs=1, seed=seed), gamma=0.99)
        return quiet(PPO("MlpPolicy", venv, seed=seed, device="cpu", verbose=0)), venv
    from sb3_contrib import TRPO

    venv = VecNormalize(make_vec_env(env_id, n_envs=2, seed=seed), gamma=0.99)
    kwargs = dict(batch_size=128, n_steps=1024, gamma=0.99, gae_lambda=0.95, sub_sampling_factor=1,
                  cg_max_steps=25, cg_damping=0.1, n_critic_updates=20, learning_rate=1e-3)
    if env_id.startswith("HalfCheetah"):
        kwargs["target_kl"] = 0.04
    return quiet(TRPO("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, **kwargs)), venv


def quiet(model):  # noqa: ANN001, ANN201
    """``model`` with a logger that writes nothing: left to itself, SB3's ``learn`` makes an
    empty ``SB3-<date>`` folder in the temporary directory on every call."""
    from stable_baselines3.common.logger import Logger

    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def evaluate(model, venv, env_id: str, episodes: int, seed: int) -> list[float]:  # noqa: ANN001
    """Deterministic returns of ``episodes`` episodes, observations normalized with the
    training statistics (frozen), rewards unnormalized."""
    import numpy as np
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    eval_env = VecNormalize(make_vec_env(env_id, n_envs=1, seed=seed + 10_007), training=False, norm_reward=False)
    eval_env.obs_rms = venv.obs_rms
    returns = []
    obs = eval_env.reset()
    total = 0.0
    while len(returns) < episodes:
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, done, _ = eval_env.step(action)
        total += float(reward[0])
        if done[0]:
            returns.append(total)
            total = 0.0
    return [float(r) for r in np.asarray(returns)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="Hopper-v5")
    p.add_argument("--algo", choices=("ppo", "trpo"), default="ppo")
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--cpu", type=int, default=None, help="pin to this core (one run per core, like compare)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    else:
        from stridelab.cores import pin_from_env

        pin_from_env()  # the cores benchmarks/grid.py gave this run
    import torch

    torch.set_num_threads(1)
    model, venv = build(args.algo, args.env, args.seed)
    start = time.perf_counter()
    model.learn(total_timesteps=args.steps)
    seconds = time.perf_counter() - start
    returns = evaluate(model, venv, args.env, args.episodes, args.seed)
    import numpy as np

    result = {
        "library": "stable-baselines3" if args.algo == "ppo" else "sb3-contrib",
        "algo": args.algo, "env": args.env, "seed": args.seed, "steps": model.num_timesteps,  # whole rollouts: >= asked
        "train_seconds": round(seconds, 1), "sps": round(model.num_timesteps / seconds, 1),
        "eval_mean": float(np.mean(returns)), "eval_std": float(np.std(returns)), "eval_returns": returns,
    }
    line = json.dumps(result)
    print(line)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
