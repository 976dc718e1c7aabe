"""Robot models from MuJoCo Menagerie, through the ``mujoco-menagerie`` package.

The package downloads a robot's files once and caches them; with ``MENAGERIE_ROOT`` set it reads
a local Menagerie checkout instead and downloads nothing (tests and CI here point it at
``../shared/menagerie``). No robot file is copied into stridelab: the model is always the
Menagerie's, edited in memory as an ``MjSpec``.
"""

from __future__ import annotations

import os
from typing import Any

from stridelab.errors import ConfigError

ROOT_VARIABLE = "MENAGERIE_ROOT"


def robot_spec(robot: str, entry: str = "scene") -> Any:
    """An editable ``mujoco.MjSpec`` of Menagerie robot ``robot``'s ``entry`` (``scene``: the
    robot on a floor). Raises :class:`ConfigError`, one line saying how to get the model, when
    it can neither be downloaded nor found under ``MENAGERIE_ROOT``."""
    import mujoco_menagerie as mm

    try:
        return mm.get(robot).spec(entry)
    except mm.MenagerieError as e:  # DownloadError (offline), a robot missing under MENAGERIE_ROOT, ...
        raise ConfigError(_how_to_get(robot, e)) from None


def _how_to_get(robot: str, cause: Exception) -> str:
    cause_line = " ".join(str(cause).split())
    root = os.environ.get(ROOT_VARIABLE)
    where = f"{ROOT_VARIABLE}={root} does not hold it" if root else "it could not be downloaded"
    return (f"MuJoCo Menagerie model {robot!r} not available ({where}: {cause_line}); connect to the "
            f"network once (mujoco-menagerie downloads and caches it) or set {ROOT_VARIABLE} to a "
            f"Menagerie checkout holding {robot}/")
