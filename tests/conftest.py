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
