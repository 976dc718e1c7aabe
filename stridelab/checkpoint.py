"""Atomic checkpoints: written to a temporary file, fsynced, then renamed into place."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

CKPT_DIR = "checkpoints"
_STEP_RE = re.compile(r"step_(\d+)\.ckpt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says which file and why."""


def atomic_torch_save(obj: Any, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(run_dir: Path, state: dict[str, Any], step: int, keep: int) -> Path:
    """Write ``step_<step>.ckpt`` and ``last.ckpt``; keep only the ``keep`` newest step files."""
    ckpt_dir = Path(run_dir) / CKPT_DIR
    path = ckpt_dir / f"step_{step:012d}.ckpt"
    atomic_torch_save(state, path)
    atomic_torch_save(state, ckpt_dir / "last.ckpt")
    steps = sorted(p for p in ckpt_dir.glob("step_*.ckpt") if _STEP_RE.search(p.name))
    for old in steps[:-keep]:
        old.unlink(missing_ok=True)
    return path


def find_checkpoint(run_dir: Path) -> Path:
    """The checkpoint to load from a run directory (``last.ckpt``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {str(run_dir)!r} does not exist")
    path = run_dir / CKPT_DIR / "last.ckpt"
    if not path.is_file():
        raise CheckpointError(f"no checkpoint in {str(run_dir)!r} (expected {CKPT_DIR}/last.ckpt)")
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged or not a stridelab checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict) or "agent" not in state or "config" not in state:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a stridelab checkpoint (missing agent or config)")
    return state
