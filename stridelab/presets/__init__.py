"""Hyperparameters as data: ``defaults.toml`` (per algorithm, simulator and task, and the named
variants of the algorithms)."""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any


def load_presets() -> dict[str, Any]:
    text = resources.files("stridelab.presets").joinpath("defaults.toml").read_text()
    return tomllib.loads(text)
