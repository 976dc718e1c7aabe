"""Learning on a small budget: both algorithms must clearly beat an untrained policy.

Brax's inverted pendulum (reward 1 per step while the pole stays within 0.2 rad, 1000-step limit)
climbs from ~65 to a few hundred within 65k steps, so a broken gradient, sign or GAE shows here.
How far one seed gets in 65k steps varies a lot (PPO's final policy between about 120 and 900
over seeds here), so the test asserts on the best of 8 evaluations during training and only
asks the final policy, evaluated independently, to clearly beat an untrained one.
"""

import pytest
import torch

from stridelab.config import build_config
from stridelab.evaluate import evaluate_agent, load_agent
from stridelab.models import ActorCritic
from stridelab.report import read_scalars
from stridelab.train import train

BUDGET = {"ppo": 65_536, "trpo": 65_536}
THRESHOLD = 180.0  # best evaluation: about 3x the untrained policy (seed 0 reaches ~200 with PPO)


def small_config(algo, run_dir):
    return build_config({
        "algo": algo, "env": "inverted_pendulum", "total_steps": BUDGET[algo], "num_envs": 64,
        "num_steps": 32, "num_minibatches": 4, "vf_minibatches": 4, "gamma": 0.99, "seed": 0,
        "eval_episodes": 4, "eval_every": 8192, "progress": False, "run_dir": str(run_dir), "max_kl": 0.02,
        "fisher_fraction": 1.0, "vf_epochs": 5, "learning_rate": 1e-3, "normalize_reward": algo == "ppo",
    })


@pytest.fixture(scope="module")
def untrained_return():
    cfg = small_config("ppo", "unused")
    return float(evaluate_agent(ActorCritic(4, 1), cfg, 8).mean())


@pytest.mark.parametrize("algo", ["ppo", "trpo"])
def test_learns_inverted_pendulum_on_a_small_budget(algo, tmp_path, untrained_return):
    cfg = small_config(algo, tmp_path / algo)
    train(cfg)
    agent, loaded_cfg, _ = load_agent(tmp_path / algo)
    returns = evaluate_agent(agent, loaded_cfg, 8, seed=123)
    steps, evals = zip(*read_scalars(tmp_path / algo)["eval/episodic_return"])
    assert untrained_return < 100
    assert len(evals) == 9 and steps[0] == 0  # the untrained policy, then eight evaluations
    assert max(evals) > THRESHOLD, f"{algo}: evaluations {evals} (untrained {untrained_return:.0f})"
    assert returns.mean().item() > 1.5 * untrained_return, f"{algo}: final {returns.tolist()}"
    assert torch.isfinite(returns).all()
