"""Simulators and their tasks. ``make_env`` is the one place the rest of stridelab builds envs.

A simulator is one module with five names (the contract tests/test_vecenv_contract.py checks):

* ``env_names() -> list[str]``: the tasks it offers;
* ``make_vec_env(name, num_envs, device, episode_length, backend, shards) -> VecEnv``;
* ``validate(cfg) -> None``: raise ``ValueError`` naming a bad value of its own settings;
* ``PRESET_TABLE``: the table of ``presets/defaults.toml`` that holds its defaults;
* ``CONTRACT_TASK``: a task the contract test runs (one whose episodes end both by termination
  and by the time limit within 100 random steps).

Optionally ``TASK_OPTIONS``, the keyword options its ``make_vec_env`` hands the task (native
MuJoCo's ``randomization``, from ``--randomize``); the registry refuses them for the others.
Optionally ``ENV_KWARGS = True``: its ``make_vec_env`` takes ``env_kwargs``, the env's constructor
arguments (``--env-kwargs``; Gymnasium and Brax); the registry refuses them for the others.
Optionally ``offers(name) -> bool``, for a simulator that runs more tasks than it lists (any
registered Gymnasium id), and ``task_defaults(name) -> dict``, settings the task's registration
gives (a Gymnasium id's time limit).
Optionally ``deploy_spec(name, **task_options) -> dict``: what a robot-side loop needs to run a
policy of that task (``stridelab export`` writes it beside the policy; :func:`deploy_spec`).

Built in: Gymnasium's envs by their ids (``Hopper-v5``, any registered id with continuous actions,
``module:EnvId`` to import the module that registers it first, or a Python factory's name),
Brax's by Brax's names (``ant``, ``halfcheetah``, ..., or any registered with
``brax.envs.register_environment``) and native MuJoCo's robot tasks by MuJoCo Playground's names
(``Go1JoystickFlatTerrain``). Another joins with one line here, or from outside stridelab with
:func:`register_simulator` in a plugin module (see :mod:`stridelab.algos.base`).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import sys
from types import ModuleType
from typing import Any

import torch

from stridelab.envs.base import VecEnv
from stridelab.envs.factories import get as get_factory
from stridelab.envs.factories import is_factory_name

# Looked up in this order: the simulators whose task lists are cheap to read come first.
SIMULATORS: dict[str, str] = {"gymnasium": "stridelab.envs.gymnasium", "mujoco": "stridelab.envs.mujoco",
                              "brax": "stridelab.envs.brax"}


def register_simulator(name: str, module: str) -> None:
    """Add the simulator implemented by ``module`` (an importable module name)."""
    SIMULATORS[name] = module


def simulator_module(simulator: str) -> ModuleType:
    return importlib.import_module(SIMULATORS[simulator])


def env_names() -> list[str]:
    """The tasks ``stridelab envs`` lists, simulator by simulator (``--env`` takes more: any name a
    simulator :func:`offers <simulator_of>`)."""
    return [n for sim in SIMULATORS for n in simulator_module(sim).env_names()]


def _offers(simulator: str, name: str) -> bool:
    """Whether ``simulator`` runs task ``name``: its ``offers(name)`` where it has one (Gymnasium:
    any registered id; Brax's ``env_names`` already reads its whole registry), else its list."""
    module = simulator_module(simulator)
    offers = getattr(module, "offers", None)
    return offers(name) if offers is not None else name in module.env_names()


def import_task(name: str) -> str:
    """The task's own name: ``module:EnvId`` (Gymnasium's form) imports ``module``, which registers
    ``EnvId`` with Gymnasium or Brax, and gives ``EnvId``; other names are their own. The current
    directory is searched last, as uvicorn does for ``module:app``: the installed ``stridelab``
    command's path has only its own folder, not the project it runs in."""
    if is_factory_name(name) or ":" not in name:
        return name
    module, _, task = name.partition(":")
    if os.getcwd() not in sys.path:  # the user's package where the command runs, as `python -m` finds it
        sys.path.append(os.getcwd())
    try:
        importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - the user's module may raise anything; its message, in one line, helps
        raise ValueError(f"env {name!r}: importing module {module!r} failed ({type(e).__name__}: {e})") from None
    return task


def simulator_of(name: str) -> str:
    """The simulator that runs task ``name`` (``ValueError`` naming the choices when none does).
    A factory's name (:mod:`stridelab.envs.factories`) is Gymnasium's whether or not this process
    holds the function: export and report need only to know which."""
    if is_factory_name(name):
        return "gymnasium"
    task = import_task(name)
    for sim in SIMULATORS:  # in order, so a Gymnasium id never imports Brax (and JAX)
        if _offers(sim, task):
            return sim
    raise ValueError(_unknown(name, task))


def check_env_name(name: str) -> None:
    """Raise ``ValueError`` (one line) for a task no simulator runs, naming the valid choices and
    the closest one, or for a factory this process was not handed."""
    if is_factory_name(name):
        get_factory(name)
    else:
        simulator_of(name)


def _unknown(name: str, task: str) -> str:
    names = env_names()
    close = difflib.get_close_matches(task, names, n=1)
    if not close:  # "hopper-v5", "Hopper": match case-insensitively, then by task name
        lower = {n.lower(): n for n in names}
        close = [lower[k] for k in (task.lower(), f"{task.lower()}-v5") if k in lower][:1]
    if not close:  # a user's own id, misspelt
        close = difflib.get_close_matches(task, simulator_module("gymnasium").registered_ids(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    module = name.partition(":")[0]
    what = f"module {module!r} registers no env {task!r}" if task != name else f"unknown env {name!r}"
    return (f"{what}{hint}; --env takes any registered Gymnasium id with continuous actions ('module:EnvId' "
            f"imports the module that registers it first) or Brax env name; listed: {', '.join(names)}")


def validate_settings(cfg: Any) -> None:
    """The simulator of ``cfg.env`` checks its own settings (e.g. Brax's ``backend``) and that it
    can make the task with ``cfg.env_kwargs``."""
    check_env_name(cfg.env)
    simulator = simulator_of(cfg.env)
    _refuse_task_options(simulator, getattr(cfg, "randomize", "none"))
    if getattr(cfg, "env_kwargs", None):
        _refuse_env_kwargs(simulator)
    if getattr(cfg, "symmetric", False):
        _refuse_symmetric(simulator, cfg.env)
    simulator_module(simulator).validate(dataclasses.replace(cfg, env=import_task(cfg.env)))


def _refuse_symmetric(simulator: str, env: str) -> None:
    """``ValueError`` (one line) for ``--symmetric`` on a task with no left-right reflection
    (a simulator's ``reflected_tasks()`` names those it has)."""
    if env not in getattr(simulator_module(simulator), "reflected_tasks", tuple)():
        having = [t for s in SIMULATORS for t in getattr(simulator_module(s), "reflected_tasks", tuple)()]
        raise ValueError(f"--symmetric: {env} has no left-right reflection to build a symmetric policy on; "
                         f"tasks with one: {', '.join(having)}")


def _refuse_env_kwargs(simulator: str) -> None:
    """``ValueError`` (one line) when a simulator whose ``make_vec_env`` takes no ``env_kwargs``
    (no ``ENV_KWARGS``) is handed some."""
    if not getattr(simulator_module(simulator), "ENV_KWARGS", False):
        takers = " and ".join(f"{_display(s)}'s" for s in SIMULATORS
                              if getattr(simulator_module(s), "ENV_KWARGS", False))
        raise ValueError(f"--env-kwargs: {_display(simulator)}'s tasks take no constructor arguments ({takers} do)")


def _display(simulator: str) -> str:
    """A simulator's name in a sentence (``native MuJoCo``, ``Gymnasium``)."""
    return {"mujoco": "native MuJoCo"}.get(simulator, simulator.capitalize())


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
    env_kwargs: dict[str, Any] | None = None,
    **task_options: Any,
) -> VecEnv:
    """Build ``num_envs`` copies of task ``name`` handing torch tensors on ``device``.

    ``backend`` picks Brax's physics pipeline and ``shards`` how many devices Brax splits the
    batch over (``auto``: every core or GPU, see :func:`stridelab.envs.brax.plan_shards`); the
    other simulators ignore both. ``env_kwargs`` go to the env's constructor (Gymnasium's
    ``gymnasium.make``, Brax's ``get_environment``: ``--env-kwargs``), ``task_options`` to the task
    (native MuJoCo's: e.g. ``randomization="all"``); a simulator that takes neither refuses them.
    """
    check_env_name(name)
    simulator = simulator_of(name)
    _refuse_task_options(simulator, options=task_options)
    if env_kwargs:  # only when given: simulators without ENV_KWARGS have no such parameter
        _refuse_env_kwargs(simulator)
        task_options = {**task_options, "env_kwargs": env_kwargs}
    env = simulator_module(simulator).make_vec_env(import_task(name), num_envs, device=device,
                                                   episode_length=episode_length, backend=backend, shards=shards,
                                                   **task_options)
    if env.spec.name != name:  # module:EnvId: the spec (and so checkpoints) name the task as the run's config does
        env.spec = dataclasses.replace(env.spec, name=name)
    return env


def task_options(cfg: Any) -> dict[str, Any]:
    """The task options a run's config asks for its training envs: ``--randomize``, when not
    ``none`` (so simulators without options are never handed any)."""
    randomize = getattr(cfg, "randomize", "none")
    return {} if randomize == "none" else {"randomization": randomize}


def task_defaults(name: str) -> dict[str, Any]:
    """Settings task ``name``'s own registration gives (a Gymnasium id's time limit), from its
    simulator's ``task_defaults(name)`` where it has one; the presets apply them between the
    simulator's table and the task's (:func:`stridelab.config.preset_for`)."""
    defaults = getattr(simulator_module(simulator_of(name)), "task_defaults", None)
    return {} if defaults is None else defaults(import_task(name))


def deploy_spec(name: str, **task_options: Any) -> dict[str, Any] | None:
    """What a robot-side loop needs to run a policy of task ``name`` (observation layout, joint
    order, PD gains, control period, ...), from a simulator module that offers
    ``deploy_spec(name, **task_options)`` (native MuJoCo's robot tasks); ``None`` for the others."""
    if ":" in name:  # a user's env (module:EnvId or a Python factory): never a robot task; export needs no env
        return None
    check_env_name(name)
    describe = getattr(simulator_module(simulator_of(name)), "deploy_spec", None)
    return None if describe is None else describe(name, **task_options)
