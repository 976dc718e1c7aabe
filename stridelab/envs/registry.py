"""Env names -> adapters. ``make_env`` is the one place the rest of stridelab builds envs."""

from __future__ import annotations

import difflib

import torch

from stridelab.envs.base import VecEnv


def env_names() -> list[str]:
    """Every task name ``--env`` accepts."""
    from stridelab.envs.brax import brax_env_names

    return brax_env_names()


def check_env_name(name: str) -> None:
    """Raise ``ValueError`` naming the valid choices (and the closest one) for an unknown env."""
    names = env_names()
    if name in names:
        return
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown env {name!r}{hint}; valid envs: {', '.join(names)}")


def make_env(
    name: str,
    num_envs: int,
    device: torch.device | str = "cpu",
    backend: str = "spring",
    episode_length: int = 1000,
) -> VecEnv:
    """Build ``num_envs`` copies of task ``name`` handing torch tensors on ``device``."""
    check_env_name(name)
    from stridelab.envs.brax import BraxVecEnv

    return BraxVecEnv(name, num_envs, backend=backend, episode_length=episode_length, device=device)
