"""Algorithms: ``update_policy(batch)`` then ``update_value(batch)`` on a shared
:class:`~stridelab.models.ActorCritic`, found by name in a registry (:mod:`stridelab.algos.base`)."""

from stridelab.algos.base import (
    REQUIRED_METRICS,
    AlgoEntry,
    Algorithm,
    algorithm_names,
    get,
    load_plugins,
    make_algorithm,
    register,
    register_preset_variants,
    register_variant,
    unregister,
)

# The built-in algorithms register themselves on import.
from stridelab.algos import ppo, trpo, vpg  # noqa: E402,F401  (after base: they register into its registry)

register_preset_variants()  # ppo-m, trpo+, ...: data in presets/defaults.toml

__all__ = ["REQUIRED_METRICS", "AlgoEntry", "Algorithm", "algorithm_names", "get", "load_plugins",
           "make_algorithm", "register", "register_preset_variants",
           "register_variant", "unregister"]
