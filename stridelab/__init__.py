"""stridelab: train and compare TRPO and PPO on robot locomotion.

The Python API (:mod:`stridelab.api`) is loaded on first use, so ``import stridelab`` stays fast
(no torch, no JAX)::

    import stridelab

    run = stridelab.train(env="ant", algo="ppo", total_steps=1_000_000)
    report = stridelab.compare(env="ant", algos=["trpo", "ppo"], seeds=3)
"""

import os as _os
import sys as _sys
import types as _types

__version__ = "0.1.0"

# MuJoCo picks its OpenGL backend when first imported (Brax imports it): render headless on EGL
# unless the user chose otherwise.
if _sys.platform.startswith("linux"):
    _os.environ.setdefault("MUJOCO_GL", "egl")

__all__ = ["ConfigError", "Report", "Run", "compare", "load", "train"]


class _Package(_types.ModuleType):
    """The package's namespace: the API's names resolve on first use, and keep meaning the API.

    ``train`` and ``compare`` are also the names of modules (``stridelab/train.py``, ...).
    Importing a submodule sets it as an attribute of its package, which would turn
    ``stridelab.train`` into the module after the first training; so the API's names refuse
    submodules. The modules stay importable: ``from stridelab.train import train``.
    """

    def __getattr__(self, name: str):  # noqa: ANN204 - the module protocol
        if name in __all__:
            from stridelab import api

            value = getattr(api, name)
            super().__setattr__(name, value)
            return value
        raise AttributeError(f"module 'stridelab' has no attribute {name!r}")

    def __setattr__(self, name: str, value: object) -> None:
        if name in __all__ and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *__all__})


_sys.modules[__name__].__class__ = _Package
