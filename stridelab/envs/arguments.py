"""Environment arguments (``--env-kwargs``): their ``KEY=VALUE`` syntax and what a run records.

``--env-kwargs xml_file=scene.xml frame_skip=25 healthy_z_range=0.195,0.75 main_body=1`` is
``gymnasium.make(id, xml_file="scene.xml", frame_skip=25, healthy_z_range=(0.195, 0.75),
main_body=1)``: the keyword syntax of the call itself, without its quotes and parentheses. A
value is read as a Python literal (``25``, ``5e-4``, ``True``, ``None``, ``'text'``,
``(0.195, 0.75)``), ``true``/``false``/``none`` as typed in a shell, a comma list as a tuple,
and anything else (``scene.xml``, a path) as a string. The arguments are saved in the run's
``config.json`` (JSON: lists come back as tuples when the env is built), so eval, video,
export, resume and compare rebuild the same env.
"""

from __future__ import annotations

import ast
import math
from typing import Any

_WORDS = {"true": True, "false": False, "none": None, "null": None}
_SCALARS = (bool, int, float, str, type(None))


def parse_pair(text: str) -> tuple[str, Any]:
    """``"frame_skip=25"`` -> ``("frame_skip", 25)``; ``ValueError`` naming the text when it is
    not ``KEY=VALUE`` with a Python name as key."""
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise ValueError(f"expected KEY=VALUE with KEY an argument name (e.g. frame_skip=25), got {text!r}")
    return key, parse_value(raw)


def parse_value(raw: str) -> Any:
    """One ``VALUE`` as described in the module's docstring."""
    if raw.lower() in _WORDS:
        return _WORDS[raw.lower()]
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = raw
        if "," in raw:  # e.g. a,b: not a literal as a whole, but a list of words
            value = tuple(parse_value(part) for part in raw.split(","))
    return _tuples(value)


def format_pair(key: str, value: Any) -> str:
    """The ``KEY=VALUE`` text :func:`parse_pair` reads back as ``(key, value)`` (lists as tuples):
    how ``compare`` hands a run's arguments to each training process."""
    if isinstance(value, str) and parse_value(value) == value:
        return f"{key}={value}"
    return f"{key}={_tuples(value)!r}"


def check_recordable(kwargs: Any, flag: str = "--env-kwargs") -> None:
    """``ValueError`` (one line) unless ``kwargs`` is a dict of names to values ``config.json``
    can hold: numbers, strings, booleans, ``None``, and lists, tuples or dicts of them."""
    if not isinstance(kwargs, dict):
        raise ValueError(f"{flag} must be a dict of argument names to values, got {kwargs!r}")
    for key, value in kwargs.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"{flag}: argument names must be Python names, got {key!r}")
        bad = _unrecordable(value)
        if bad is not None:
            raise ValueError(f"{flag} {key}={value!r}: {bad} cannot be saved in the run's config.json (which "
                             f"eval, video and resume rebuild the env from); give numbers, strings, booleans, None "
                             f"or lists of them, or build the env in a Python factory: stridelab.train(env=make_env)")


def _unrecordable(value: Any) -> str | None:
    """What in ``value`` JSON cannot hold faithfully, or ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"the non-finite number {value!r}"
    if isinstance(value, _SCALARS):
        return None
    if isinstance(value, (list, tuple)):
        return next((bad for bad in map(_unrecordable, value) if bad is not None), None)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return next((bad for bad in map(_unrecordable, value.values()) if bad is not None), None)
    return f"a {type(value).__module__}.{type(value).__qualname__}"


def call_kwargs(kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """The arguments as the env's constructor gets them: lists (JSON's) as tuples, as typed."""
    return {k: _tuples(v) for k, v in (kwargs or {}).items()}


def _tuples(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value
