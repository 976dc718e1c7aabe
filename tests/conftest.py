import os
from pathlib import Path

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


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist's ``--dist loadgroup`` (``make test``), a file's tests stay on one worker,
    so a module-scoped fixture (a small trained run many tests read) runs once, not once per
    worker; tests marked with their own ``xdist_group`` (one local Ray cluster at a time) keep it."""
    import pytest

    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
