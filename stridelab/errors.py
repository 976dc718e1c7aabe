"""The errors bad input raises, in a module that imports nothing of stridelab (every layer uses them)."""

from __future__ import annotations

import difflib


class ConfigError(ValueError):
    """A bad setting: the message names the value and what is allowed."""


def unknown_choice(what: str, value: str, choices: tuple[str, ...] | list[str]) -> ConfigError:
    """``unknown algo 'ppp' (did you mean 'ppo'?); choose one of ppo, trpo``."""
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown {what} {value!r}{hint}; choose one of {', '.join(choices)}")
