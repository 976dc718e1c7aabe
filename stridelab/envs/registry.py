"""Simulators and their tasks. ``make_env`` is the one place the rest of stridelab builds envs.

A simulator is one module with four names (the contract tests/test_vecenv_contract.py checks):

* ``env_names() -> list[str]``: the tasks it offers;
* ``make_vec_env(name, num_envs, device, episode_length, backend, shards) -> VecEnv``;
* ``validate(cfg) -> None``: raise ``ValueError`` naming a bad value of its own settings;
* ``PRESET_TABLE``: the table of ``presets/defaults.toml`` that holds its defaults;
* ``CONTRACT_TASK``: a task the contract test runs (one whose episodes end both by termination
  and by the time limit within 100 random steps).

Optionally ``TASK_OPTIONS``, the keyword options its ``make_vec_env`` hands the task (native
MuJoCo's ``randomization``, from ``--randomize``); the registry refuses them for the others.
Optionally ``deploy_spec(name, **task_options) -> dict``: what a robot-side loop needs to run a
policy of that task (``stridelab export`` writes it beside the policy; :func:`deploy_spec`).

Built in: Gymnasium's MuJoCo tasks by their ids (``Hopper-v5``, ...), Brax's by Brax's names
(``ant``, ``halfcheetah``, ...) and native MuJoCo's robot tasks by MuJoCo Playground's names
(``Go1JoystickFlatTerrain``). Another joins with one line here, or from outside stridelab with
:func:`register_simulator` in a plugin module (see :mod:`stridelab.algos.base`).
"""

from __future__ import annotations

import difflib
import importlib
from types import ModuleType
from typing import Any

import torch

from stridelab.envs.base import VecEnv

# Looked up in this order: the simulators whose task lists are cheap to read come first.
SIMULATORS: dict[str, str] = {"gymnasium": "stridelab.envs.gymnasium", "mujoco": "stridelab.envs.mujoco",
                              "brax": "stridelab.envs.brax"}


def register_simulator(name: str, module: str) -> None:
    """Add the simulator implemented by ``module`` (an importable module name)."""
    SIMULATORS[name] = module


def simulator_module(simulator: str) -> ModuleType:
    return importlib.import_module(SIMULATORS[simulator])


def env_names() -> list[str]:
    """Every task name ``--env`` accepts, simulator by simulator."""
    return [n for sim in SIMULATORS for n in simulator_module(sim).env_names()]


def simulator_of(name: str) -> str:
    """The simulator that offers task ``name`` (after :func:`check_env_name`)."""
    for sim in SIMULATORS:
        if name in simulator_module(sim).env_names():
            return sim
    check_env_name(name)
    raise AssertionError("unreachable")


def check_env_name(name: str) -> None:
    """Raise ``ValueError`` naming the valid choices (and the closest one) for an unknown env."""
    if any(name in simulator_module(sim).env_names() for sim in SIMULATORS):
        return  # simulators in order, so a Gymnasium id never imports Brax (and JAX)
    names = env_names()
    close = difflib.get_close_matches(name, names, n=1)
    if not close:  # "hopper-v5", "Hopper": match case-insensitively, then by task name
        lower = {n.lower(): n for n in names}
        close = [lower[k] for k in (name.lower(), f"{name.lower()}-v5") if k in lower][:1]
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown env {name!r}{hint}; valid envs: {', '.join(names)}")


def validate_settings(cfg: Any) -> None:
    """The simulator of ``cfg.env`` checks its own settings (e.g. Brax's ``backend``)."""
    check_env_name(cfg.env)
    simulator = simulator_of(cfg.env)
    _refuse_task_options(simulator, getattr(cfg, "randomize", "none"))
    simulator_module(simulator).validate(cfg)


def _refuse_task_options(simulator: str, randomize: str = "none", options: dict | None = None) -> None:
    """``ValueError`` (one line) when a simulator without ``TASK_OPTIONS`` is asked for domain
    randomization (``--randomize``) or handed task ``options`` by :func:`make_env`."""
    if getattr(simulator_module(simulator), "TASK_OPTIONS", ()):
        return
    name = simulator.capitalize()
    if randomize != "none":
        raise ValueError(f"--randomize {randomize!r}: {name}'s tasks have no domain randomization (it is "
                         f"native MuJoCo's, e.g. Go1JoystickFlatTerrain); use --randomize none")
    if options:
        raise ValueError(f"{name}'s tasks take no task options, got {', '.join(sorted(options))} (they are "
                         f"native MuJoCo's, e.g. randomization for Go1JoystickFlatTerrain)")


def preset_table(name: str) -> str:
    """The presets table of task ``name``'s simulator (``brax``, ``gymnasium``)."""
    return simulator_module(simulator_of(name)).PRESET_TABLE


def make_env(
    name: str,
    num_envs: int,
    device: torch.device | str = "cpu",
    backend: str = "spring",
    episode_length: int = 1000,
    shards: int | str = "auto",
    **task_options: Any,
) -> VecEnv:
    """Build ``num_envs`` copies of task ``name`` handing torch tensors on ``device``.

    ``backend`` picks Brax's physics pipeline and ``shards`` how many devices Brax splits the
    batch over (``auto``: every core or GPU, see :func:`stridelab.envs.brax.plan_shards`); the
    other simulators ignore both. ``task_options`` go to the task (native MuJoCo's: e.g.
    ``randomization="all"``); a simulator whose tasks take none refuses them.
    """
    check_env_name(name)
    simulator = simulator_of(name)
    _refuse_task_options(simulator, options=task_options)
    return simulator_module(simulator).make_vec_env(name, num_envs, device=device, episode_length=episode_length,
                                                    backend=backend, shards=shards, **task_options)


def task_options(cfg: Any) -> dict[str, Any]:
    """The task options a run's config asks for its training envs: ``--randomize``, when not
    ``none`` (so simulators without options are never handed any)."""
    randomize = getattr(cfg, "randomize", "none")
    return {} if randomize == "none" else {"randomization": randomize}


def deploy_spec(name: str, **task_options: Any) -> dict[str, Any] | None:
    """What a robot-side loop needs to run a policy of task ``name`` (observation layout, joint
    order, PD gains, control period, ...), from a simulator module that offers
    ``deploy_spec(name, **task_options)`` (native MuJoCo's robot tasks); ``None`` for the others."""
    check_env_name(name)
    describe = getattr(simulator_module(simulator_of(name)), "deploy_spec", None)
    return None if describe is None else describe(name, **task_options)
