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
    unregister,
)

# The built-in algorithms register themselves on import.
from stridelab.algos import ppo, trpo  # noqa: E402,F401  (after base: they register into its registry)

__all__ = ["REQUIRED_METRICS", "AlgoEntry", "Algorithm", "algorithm_names", "get", "load_plugins",
           "make_algorithm", "register", "unregister"]
