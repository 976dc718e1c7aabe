"""Python env factories: ``stridelab.train(env=make_env)`` for an env registered nowhere.

``make_env()`` returns a ``gymnasium.Env`` (stridelab makes ``num_envs`` of them, each ending
at ``--episode-length`` steps, and steps them in one ``SyncVectorEnv``); ``make_env(num_envs)``,
a factory with a ``num_envs`` parameter, returns a ``gymnasium.vector.VectorEnv`` of that many
(training and evaluation ask for different counts), whose own time limit applies. One that
takes ``render_mode`` is passed ``"rgb_array"`` when a video is recorded.

A function cannot be saved in ``config.json``, so a run records its factory's name
(``factory:module.qualname``) and this process keeps the function under that name. A later
process (``stridelab eval``, ``video``, ``train --resume``) has no function to call: those verbs
need it handed again, ``stridelab.load(run_dir, env=make_env)`` or ``stridelab.train(env=make_env,
run_dir=..., resume=True)``, and say so in one line (:func:`needs_factory`). Export and report
read only the checkpoint and the logs, so they work anywhere.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


class FactoryError(ValueError):
    """A factory stridelab cannot use, or one not handed to this process (one line)."""


PREFIX = "factory:"  # reserved: an env name "factory:..." is never read as Gymnasium's module:EnvId
_FACTORIES: dict[str, Callable[..., Any]] = {}


def is_factory_name(name: str) -> bool:
    return name.startswith(PREFIX)


def name_of(factory: Callable[..., Any]) -> str:
    """``factory:module.qualname``: the name a run records for ``factory``."""
    module = getattr(factory, "__module__", None) or type(factory).__module__
    qualname = getattr(factory, "__qualname__", None) or type(factory).__qualname__
    return f"{PREFIX}{module}.{qualname}"


def short_name(name: str) -> str:
    """The function's own name (``make_env``), for run directories and messages."""
    return name[len(PREFIX):].rsplit(".", 1)[-1] if is_factory_name(name) else name


def register(factory: Callable[..., Any], name: str | None = None) -> str:
    """Keep ``factory`` under ``name`` (default :func:`name_of`) for this process; returns the
    name. A later factory of the same name replaces it (a notebook cell run again)."""
    if not callable(factory):
        raise FactoryError(f"env must be a task name or a function returning a gymnasium.Env, got {factory!r}")
    name = name or name_of(factory)
    _FACTORIES[name] = factory
    return name


def registered(name: str) -> bool:
    return name in _FACTORIES


def get(name: str) -> Callable[..., Any]:
    """The factory kept under ``name``; ``ValueError`` saying how to hand it back when missing."""
    if name not in _FACTORIES:
        raise FactoryError(f"env {name!r} is a Python function this process was not given; {needs_factory(name)}")
    return _FACTORIES[name]


def needs_factory(name: str, run_dir: str = "RUN_DIR") -> str:
    """Which verbs need the factory of a run trained on ``name`` again, and how to give it."""
    fn = short_name(name)
    return (f"evaluating, rendering and resuming a run trained on it take the function again: "
            f"stridelab.load({run_dir}, env={fn}).evaluate() or .video(), stridelab.train(env={fn}, "
            f"run_dir={run_dir}, resume=True); `stridelab eval`, `video` and `train --resume` cannot reach a "
            f"Python function (register the env with gymnasium.register to use them); export and report need no env")


def takes(fn: Callable[..., Any], parameter: str, through_kwargs: bool = True) -> bool:
    """Whether ``fn`` accepts the keyword ``parameter``: by name, or (``through_kwargs``) through
    a ``**kwargs`` it may pass on, e.g. to ``gymnasium.make``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return any(p.name == parameter or (through_kwargs and p.kind is p.VAR_KEYWORD) for p in params)


def make_vector(name: str, num_envs: int, episode_length: int, render_mode: str | None = None) -> Any:
    """``num_envs`` envs of factory ``name`` as one Gymnasium vector env that restarts an ended
    env within the same step (``AutoresetMode.SAME_STEP``, the true last observation in
    ``info``); single envs made here also end at ``episode_length`` steps (a truncation)."""
    import gymnasium as gym

    factory = get(name)
    options = {"render_mode": render_mode} if render_mode and takes(factory, "render_mode") else {}
    if takes(factory, "num_envs", through_kwargs=False):  # by name only: **kwargs may go to gymnasium.make
        return _checked_vector(factory(num_envs=num_envs, **options), num_envs, name)
    made = [factory(**options)]
    if isinstance(made[0], gym.vector.VectorEnv):
        made[0].close()
        raise FactoryError(f"{short_name(name)}() returned a vector env: give it a num_envs parameter (training "
                           f"and evaluation ask for different counts of envs)")
    if not isinstance(made[0], gym.Env):
        raise FactoryError(f"{short_name(name)}() returned {type(made[0]).__name__}, not a gymnasium.Env or "
                           f"gymnasium.vector.VectorEnv")

    def one() -> Any:  # the env made above first, so the factory runs num_envs times in all
        return gym.wrappers.TimeLimit(made.pop() if made else factory(**options), int(episode_length))

    return gym.vector.SyncVectorEnv([one] * int(num_envs), autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def _checked_vector(env: Any, num_envs: int, name: str) -> Any:
    """A factory's own vector env, if stridelab can step it: ``num_envs`` envs, ended ones
    restarted within the step that ended them (else ``ValueError``, one line)."""
    import gymnasium as gym

    fn = short_name(name)
    if not isinstance(env, gym.vector.VectorEnv):
        raise FactoryError(f"{fn}(num_envs=...) returned {type(env).__name__}, not a gymnasium.vector.VectorEnv")
    if env.num_envs != num_envs:
        raise FactoryError(f"{fn}(num_envs={num_envs}) returned a vector env of {env.num_envs} envs where "
                           f"{num_envs} are needed")
    mode = env.metadata.get("autoreset_mode")
    if mode not in (gym.vector.AutoresetMode.SAME_STEP, gym.vector.AutoresetMode.SAME_STEP.value):
        raise FactoryError(f"{fn}()'s vector env restarts ended envs in mode {getattr(mode, 'name', mode)}; "
                           f"stridelab needs SAME_STEP (the true last observation, to bootstrap truncated episodes): "
                           f"vector_kwargs={{'autoreset_mode': gymnasium.vector.AutoresetMode.SAME_STEP}}")
    return env
