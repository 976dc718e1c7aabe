# The [mujoco] presets with the pose reward off and the feet-clearance penalty a quarter (docs/results.md, Go1).
# Run from the repository root: python benchmarks/results/go1/probe-ppo-nopose.py
from stridelab.config import build_config
from stridelab.train import train
from stridelab.envs.mujoco import make_vec_env
from stridelab.envs.go1 import Go1Config, REWARD_WEIGHTS

weights = {**REWARD_WEIGHTS, "pose": 0.0, "feet_clearance": -0.5}
cfg = build_config({"env": "Go1JoystickFlatTerrain", "algo": "ppo", "total_steps": 6_000_000,
                    "run_dir": "runs/go1-ppo-probe-nopose", "progress": False})
env = make_vec_env("Go1JoystickFlatTerrain", cfg.num_envs, episode_length=cfg.episode_length,
                   config=Go1Config(reward_weights=weights))
print(train(cfg, env=env))
