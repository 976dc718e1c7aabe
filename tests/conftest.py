import os
from pathlib import Path

import pytest

# Robot models come from a local MuJoCo Menagerie at <repo>/../shared/menagerie when there is one
# (no network needed); a MENAGERIE_ROOT the caller set wins.
_MENAGERIE = Path(__file__).resolve().parent.parent.parent / "shared" / "menagerie"
if not os.environ.get("MENAGERIE_ROOT") and _MENAGERIE.is_dir():
    os.environ["MENAGERIE_ROOT"] = str(_MENAGERIE)

# The suite's own JAX compilation cache (`make clean` clears it): each Brax program compiles once
# per clone, not once per test process; the test commands' subprocesses inherit it.
os.environ.setdefault("STRIDELAB_JAX_CACHE", str(Path(__file__).resolve().parent.parent / ".cache" / "jax"))
# MuJoCo picks its OpenGL backend on first import: headless EGL, whichever test imports it first.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture
def one_ray_cluster_at_a_time(tmp_path_factory):
    """Tests that start a local Ray cluster take turns, also across pytest-xdist's workers (the
    lock file lives in the run's shared temporary root)."""
    import fcntl

    with open(tmp_path_factory.getbasetemp().parent / "ray.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# The files that take longest (each 30 s or more: trainings, subprocesses, a local Ray cluster),
# longest first. pytest-xdist's `--dist loadfile` hands files to its workers in collection
# order, so these go first and the short files fill in behind them: alphabetically, a long file
# handed out last kept one core idle for half a minute at the end while the other worker ran it.
LONGEST_FIRST = ("test_gpu_check.py", "test_grid.py", "test_cli.py", "test_distributed.py", "test_notebooks.py",
                 "test_plugin_algorithm.py", "test_sharding.py", "test_learning.py", "test_any_env.py",
                 "test_fused_rollout.py", "test_robustness.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
