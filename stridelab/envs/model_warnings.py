"""MuJoCo's own warnings, caught where models are loaded and reported through Python's ``warnings``.

MuJoCo's compiler prints its warnings straight to the process's stderr from C (MuJoCo 4:
``WARNING: compiler attribute 'settotalmass' is deprecated ...`` for Gymnasium's and Brax's
HalfCheetah files), so they land in the middle of whatever is being printed, ``stridelab envs``'
table included, and no filter can silence or keep them. While a model loads inside
:func:`mujoco_warnings`, MuJoCo hands them to a collector instead; when the outermost such block
ends, each distinct message not yet reported by this process is issued once as a
:class:`MujocoWarning`, which ``python -W`` and :mod:`warnings` filters then govern as any other.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any


class MujocoWarning(UserWarning):
    """A warning MuJoCo printed while compiling a model (upstream's to fix, reported here once)."""


_collected: list[str] = []
_reported: set[str] = set()
_depth = 0


@contextlib.contextmanager
def mujoco_warnings() -> Iterator[None]:
    """Collect MuJoCo's warnings inside the block; report each new one once when the outermost
    block ends (nested blocks are part of it: ``stridelab envs`` reports after its whole table)."""
    global _depth
    if _depth:
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
        return
    previous = _install()
    _depth = 1
    try:
        yield
    finally:
        _depth = 0
        _restore(previous)
        _report()


def _install() -> Any:
    """Route MuJoCo's warnings to the collector; returns the handler it replaced (or ``None``).
    Without MuJoCo installed there is nothing to catch."""
    try:
        import mujoco
    except ImportError:
        return None
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(_collected.append)
    return previous


def _restore(previous: Any) -> None:
    try:
        import mujoco
    except ImportError:
        return
    mujoco.set_mju_user_warning(previous)


def _report() -> None:
    messages = list(dict.fromkeys(_collected))
    _collected.clear()
    for message in messages:
        if message not in _reported:
            _reported.add(message)
            warnings.warn(f"MuJoCo: {' '.join(message.split())}", MujocoWarning, stacklevel=4)
