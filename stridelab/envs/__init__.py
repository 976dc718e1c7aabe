"""Batched simulators behind one torch interface."""

from stridelab.envs.base import EnvSpec, StepResult, VecEnv
from stridelab.envs.registry import check_env_name, env_names, make_env

__all__ = ["EnvSpec", "StepResult", "VecEnv", "check_env_name", "env_names", "make_env"]
