"""Where a result came from: versions, commit, machine, command line and date, for every run's
``summary.json`` and every report, so two results can be told apart months later.

Only the standard library at import; package versions come from their installed metadata (no
heavy imports), the GPU's name from torch only when torch is already loaded.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import functools
import importlib.metadata
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The distributions whose versions change results, in the order a reader looks for them.
PACKAGES = ("stridelab", "torch", "jax", "jaxlib", "brax", "mujoco", "gymnasium", "lightning", "numpy")

_command: contextvars.ContextVar[str | None] = contextvars.ContextVar("stridelab_command", default=None)


@contextlib.contextmanager
def recording_command(command: str) -> Iterator[None]:
    """Record ``command`` instead of ``sys.argv`` (the Python API names its own call: in a
    notebook ``sys.argv`` is the kernel's)."""
    token = _command.set(command)
    try:
        yield
    finally:
        _command.reset(token)


def command_line() -> str:
    """The command being run: the API call recorded, else ``sys.argv`` with ``python -m
    stridelab``'s script shown as ``stridelab``."""
    recorded = _command.get()
    if recorded is not None:
        return recorded
    argv = list(sys.argv) or [""]
    if Path(argv[0]).name in ("__main__.py", "stridelab") and "stridelab" in Path(argv[0]).parts[-2:]:
        argv[0] = "stridelab"
    return shlex.join(argv)


def versions() -> dict[str, str]:
    """Installed versions of :data:`PACKAGES` (``"not installed"`` for an absent one) and Python."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    found["python"] = platform.python_version()
    return found


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the checkout stridelab runs from, ``+dirty`` when tracked files differ from
    it; ``"unknown"`` outside a git checkout of stridelab itself (an installed copy, or one inside
    another project's repository) or without git."""
    package = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        top = Path(git("rev-parse", "--show-toplevel")).resolve()
        if top / package.name != package:
            return "unknown"
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo, else what the platform says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def gpu_model() -> str | None:
    """The first CUDA device's name, when torch is loaded and sees one; else None."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return str(torch.cuda.get_device_name(0))


def provenance(device: str | None = None) -> dict[str, Any]:
    """Everything above as one JSON-ready dict; ``device`` is what the work ran on (``cpu``,
    ``cuda:0``; default: ``cuda`` when :func:`gpu_model` finds one, else ``cpu``)."""
    gpu, installed = gpu_model(), versions()
    return {
        "stridelab": installed["stridelab"],
        "commit": git_commit(),
        "versions": installed,
        "device": device or ("cuda" if gpu else "cpu"),
        "cpu": cpu_model(),
        "gpu": gpu,
        "host_os": f"{platform.system()} {platform.release()}",
        "command": command_line(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
