"""stridelab: train and compare TRPO and PPO on robot locomotion."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# MuJoCo picks its OpenGL backend when first imported (Brax imports it): render headless on EGL
# unless the user chose otherwise.
if _sys.platform.startswith("linux"):
    _os.environ.setdefault("MUJOCO_GL", "egl")
