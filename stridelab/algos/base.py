"""What an algorithm is to stridelab, and the registry that finds one by name.

An algorithm owns the learning math and nothing else: the :class:`~stridelab.runner.Runner`
collects the rollout, builds the :class:`~stridelab.rollout.Batch` (normalizer, GAE), and then
calls, on that batch and in this order::

    metrics = algo.update_policy(batch)   # the policy's step(s)
    # (the runner may start the next rollout here: it needs only the policy)
    metrics |= algo.update_value(batch)   # the value net's fit, on the same batch

Both return CleanRL-style metrics (``losses/...``); together they must hold
:data:`REQUIRED_METRICS`, which the runner's NaN guard checks (with the weights) after every
update. The policy must not change in ``update_value``: the runner may be collecting with it.

A new algorithm is a class with those two methods (subclass :class:`Algorithm` for the rest)
registered under a name::

    @register("vpg", preset="ppo", description="vanilla policy gradient")
    class VPG(Algorithm): ...

and ``stridelab train --algo vpg``, ``compare`` and ``report`` know it. Modules that register
algorithms outside stridelab are imported by :func:`load_plugins`: the ones named in
``STRIDELAB_PLUGINS`` (comma-separated module names) and the entry points of the group
``stridelab.plugins``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from stridelab.distributed import SINGLE, Comm
from stridelab.errors import unknown_choice
from stridelab.rollout import Batch

REQUIRED_METRICS = ("losses/policy_loss", "losses/value_loss")
PLUGINS_ENV = "STRIDELAB_PLUGINS"


class Algorithm:
    """Base class: keeps the networks, config and communicator, and has the parts every
    algorithm needs in the same form. Subclasses set :attr:`optimizers` in ``__init__``."""

    name: ClassVar[str] = ""
    optimizers: dict[str, torch.optim.Optimizer]

    def __init__(self, agent: Any, cfg: Any, comm: Comm = SINGLE) -> None:
        self.agent, self.cfg, self.comm = agent, cfg, comm
        self.optimizers = {}

    def update_policy(self, batch: Batch) -> dict[str, float]:
        raise NotImplementedError

    def update_value(self, batch: Batch) -> dict[str, float]:
        raise NotImplementedError

    def update(self, batch: Batch) -> dict[str, float]:
        """Both steps, one after the other (what the runner does when nothing overlaps)."""
        metrics = self.update_policy(batch)
        metrics.update(self.update_value(batch))
        return metrics

    def gradient_step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                      params: list[torch.nn.Parameter]) -> None:
        """One step of ``optimizer`` on ``loss`` for ``params``: gradients averaged over the
        data-parallel processes, then their norm clipped to ``max_grad_norm`` (with ``clip_grad``).
        Parameters left out keep gradients of None, so the optimizer leaves them alone."""
        gradient_step(optimizer, loss, params, self.comm, self.cfg)

    def set_progress(self, fraction_done: float) -> None:
        """Called before each iteration with the share of training done (for schedules)."""

    @property
    def learning_rate(self) -> float:
        """The learning rate logged as ``charts/learning_rate`` (the first optimizer's)."""
        first = next(iter(self.optimizers.values()), None)
        return float(first.param_groups[0]["lr"]) if first is not None else 0.0

    def state_dict(self) -> dict[str, Any]:
        """The optimizers' states (the networks are saved with the agent)."""
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])


def gradient_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, params: list[torch.nn.Parameter],
                  comm: Comm, cfg: Any) -> None:
    """See :meth:`Algorithm.gradient_step` (also used by the critic helper)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    comm.average_gradients(params)
    if cfg.clip_grad:
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    optimizer.step()


@dataclass(frozen=True)
class AlgoEntry:
    """A registered algorithm: its class, the preset section its defaults come from (its own
    name's section is read too, after it), the config fields only it uses (for the report), and
    for a variant (:func:`register_variant`) the switches that make it one."""

    name: str
    cls: type
    preset: str
    description: str
    fields: tuple[str, ...]
    switches: dict[str, Any] = field(default_factory=dict)
    base: str = ""  # the algorithm a variant varies ("" for an algorithm of its own)
    # Its place in an ablation: "core" (clip, trust region, ...) and "optimizations" (on, off),
    # the two factors of Engstrom et al. 2020's study, which the report separates.
    factors: dict[str, str] = field(default_factory=dict)


_REGISTRY: dict[str, AlgoEntry] = {}


def register(name: str, preset: str | None = None, description: str = "",
             fields: tuple[str, ...] = (), factors: dict[str, str] | None = None) -> Callable[[type], type]:
    """Class decorator: make ``cls`` the algorithm called ``name``."""

    def add(cls: type) -> type:
        cls.name = name
        _REGISTRY[name] = AlgoEntry(name, cls, preset or name, description or (cls.__doc__ or "").split("\n")[0],
                                    tuple(fields), factors=dict(factors or {}))
        return cls

    return add


def register_variant(name: str, base: str, switches: dict[str, Any], description: str = "",
                     factors: dict[str, str] | None = None) -> None:
    """Register ``name`` as algorithm ``base`` with ``switches`` set (config fields; they win over
    every preset table, and a flag on the command line wins over them). ``factors`` update the
    base's."""
    entry = _REGISTRY[base]
    _REGISTRY[name] = AlgoEntry(name, entry.cls, entry.preset, description or f"{base} with {switches}",
                                entry.fields, dict(switches), base, {**entry.factors, **(factors or {})})


def register_preset_variants() -> None:
    """The variants ``presets/defaults.toml`` defines under ``[variants.<name>]`` (``base``,
    ``description``, the ``core`` and ``optimizations`` factors, then switches)."""
    from stridelab.presets import load_presets

    for name, table in load_presets().get("variants", {}).items():
        values = dict(table)
        base, description = values.pop("base"), values.pop("description", "")
        factors = {k: values.pop(k) for k in ("core", "optimizations") if k in values}
        register_variant(name, base, values, description, factors)


def unregister(name: str) -> None:
    """Forget the algorithm ``name`` (a no-op for a name never registered)."""
    _REGISTRY.pop(name, None)


def algorithm_names() -> tuple[str, ...]:
    """Every registered algorithm, in the order registered."""
    load_plugins()
    return tuple(_REGISTRY)


def get(name: str) -> AlgoEntry:
    """The entry for ``name``; a :class:`~stridelab.errors.ConfigError` naming the choices if none."""
    load_plugins()
    if name not in _REGISTRY:
        raise unknown_choice("algo", name, tuple(_REGISTRY))
    return _REGISTRY[name]


def make_algorithm(agent: Any, cfg: Any, comm: Comm = SINGLE) -> Algorithm:
    """The algorithm ``cfg.algo`` names, on ``agent``."""
    return get(cfg.algo).cls(agent, cfg, comm)


_plugins_loaded: set[str] = set()


def load_plugins() -> None:
    """Import the modules that register algorithms (or simulators) from outside stridelab."""
    from importlib.metadata import entry_points

    names = [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
    for name in names:
        if name not in _plugins_loaded:
            _plugins_loaded.add(name)
            try:
                importlib.import_module(name)
            except ImportError as e:
                raise ImportError(f"{PLUGINS_ENV} names {name!r}, which cannot be imported ({e})") from None
    for ep in entry_points(group="stridelab.plugins"):
        if ep.value not in _plugins_loaded:
            _plugins_loaded.add(ep.value)
            ep.load()
