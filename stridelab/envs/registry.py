"""Env names -> adapters. ``make_env`` is the one place the rest of stridelab builds envs.

Two simulators: Brax tasks go by Brax's names (``ant``, ``halfcheetah``, ...), Gymnasium's MuJoCo
tasks by Gymnasium ids (``Hopper-v5``, ``HalfCheetah-v5``, ...).
"""

from __future__ import annotations

import difflib

import torch

from stridelab.envs.base import VecEnv


def env_names() -> list[str]:
    """Every task name ``--env`` accepts: Brax's, then Gymnasium's."""
    from stridelab.envs.brax import brax_env_names
    from stridelab.envs.gymnasium import gymnasium_env_names

    return brax_env_names() + gymnasium_env_names()


def simulator_of(name: str) -> str:
    """``gymnasium`` for a Gymnasium id, else ``brax``."""
    from stridelab.envs.gymnasium import gymnasium_env_names

    return "gymnasium" if name in gymnasium_env_names() else "brax"


def check_env_name(name: str) -> None:
    """Raise ``ValueError`` naming the valid choices (and the closest one) for an unknown env."""
    names = env_names()
    if name in names:
        return
    close = difflib.get_close_matches(name, names, n=1)
    if not close:  # "hopper-v5", "Hopper": match case-insensitively, then by task name
        lower = {n.lower(): n for n in names}
        close = [lower[k] for k in (name.lower(), f"{name.lower()}-v5") if k in lower][:1]
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown env {name!r}{hint}; valid envs: {', '.join(names)}")


def make_env(
    name: str,
    num_envs: int,
    device: torch.device | str = "cpu",
    backend: str = "spring",
    episode_length: int = 1000,
) -> VecEnv:
    """Build ``num_envs`` copies of task ``name`` handing torch tensors on ``device``.

    ``backend`` picks Brax's physics pipeline and is ignored by Gymnasium tasks.
    """
    check_env_name(name)
    if simulator_of(name) == "gymnasium":
        from stridelab.envs.gymnasium import GymnasiumVecEnv

        return GymnasiumVecEnv(name, num_envs, episode_length=episode_length, device=device)
    from stridelab.envs.brax import BraxVecEnv

    return BraxVecEnv(name, num_envs, backend=backend, episode_length=episode_length, device=device)
