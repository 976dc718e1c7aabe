"""Stop requests: SIGINT and SIGTERM set a flag that training checks at safe points.

The handlers go in before anything heavy starts. Left to Python's default, a Ctrl-C during
JAX's start-up can land in a callback JAX runs from the garbage collector, where the
KeyboardInterrupt is printed ("Exception ignored ...") and dropped: the run went on to the end.
A flag cannot be dropped; set-up checks it between its steps (:func:`raise_if_stopped`) and the
training loop after each iteration. A second signal raises KeyboardInterrupt at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_flag: dict[str, int | None] = {"signum": None}
_installed = {"depth": 0}


class StopRequested(Exception):
    """A stop was asked for before training began: nothing was trained or written by this process."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name} during start-up, before any training step")


def _handler(signum: int, frame: Any) -> None:
    if _flag["signum"] is not None:
        raise KeyboardInterrupt
    _flag["signum"] = signum


@contextmanager
def stop_on_signals() -> Iterator[dict[str, int | None]]:
    """Inside the block SIGINT/SIGTERM set the returned flag (``flag["signum"]``). Nested blocks
    share the outermost one's handlers and flag. Off the main thread (where Python cannot install
    handlers) the flag is a private one nothing sets."""
    if threading.current_thread() is not threading.main_thread():
        yield {"signum": None}
        return
    if _installed["depth"]:
        _installed["depth"] += 1
        try:
            yield _flag
        finally:
            _installed["depth"] -= 1
        return
    _flag["signum"] = None
    old = {sig: signal.signal(sig, _handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    _installed["depth"] = 1
    try:
        yield _flag
    finally:
        _installed["depth"] = 0
        for sig, h in old.items():
            signal.signal(sig, h)


def raise_if_stopped(flag: dict[str, int | None] | None = None) -> None:
    """Raise :class:`StopRequested` when a stop was asked for (a safe point of set-up)."""
    if flag is None:
        flag = _flag if _installed["depth"] else {"signum": None}
    signum = flag["signum"]
    if signum is not None:
        raise StopRequested(signum)
