"""Atomic checkpoints: written to a temporary file, fsynced, then renamed into place."""

from __future__ import annotations

import io
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

CKPT_DIR = "checkpoints"
STEP_RE = re.compile(r"step_(\d+)\.ckpt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says which file and why."""


def all_finite(obj: Any) -> bool:
    """Whether every floating-point tensor and float inside ``obj`` (nested dicts, lists,
    tuples) is finite."""
    if isinstance(obj, torch.Tensor):
        return not obj.is_floating_point() or bool(torch.isfinite(obj).all())
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(all_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(all_finite(v) for v in obj)
    return True


def atomic_torch_save(obj: Any, path: Path, check_finite: Any = None, copies: tuple[Path, ...] = ()) -> None:
    """Write ``obj`` to ``path`` atomically: a temporary file in the same folder, fsynced, then
    renamed over ``path``. With ``check_finite`` (a part of ``obj``), refuse to write when it
    holds a non-finite number: a poisoned checkpoint must never replace a good one. ``copies``
    get the same bytes the same way, after ``path`` (``obj`` is pickled once for all)."""
    paths = [Path(p) for p in (path, *copies)]
    if check_finite is not None and not all_finite(check_finite):
        raise CheckpointError(f"refusing to write {str(paths[0])!r}: the state holds NaN or infinite values")
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    # Serialized in memory first: torch.save writing into a full disk fails with a RuntimeError
    # about a zip position; a plain write fails with ENOSPC, which says what happened.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    for p in paths:
        _write_atomically(buffer, p)


def _write_atomically(buffer: io.BytesIO, path: Path) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path.parent)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            except OSError as e:  # name the checkpoint, not the temporary file
                raise OSError(e.errno, e.strerror, str(path)) from None
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
    atomic_torch_save(state, path, check_finite=_learned_state(state), copies=(ckpt_dir / "last.ckpt",))
    for _, old in step_files(ckpt_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def step_files(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """The ``step_<N>.ckpt`` files in ``ckpt_dir`` as ``(N, path)``, oldest first. Ordered by
    name: the step order, since :func:`save_checkpoint` zero-pads N to a fixed width."""
    paths = sorted(Path(ckpt_dir).glob("step_*.ckpt"))
    return [(int(m.group(1)), p) for p in paths if (m := STEP_RE.search(p.name))]


def _learned_state(state: dict[str, Any]) -> Any:
    """The parts of a training state that must be finite: weights, normalizers, optimizers.
    (Statistics such as the best evaluation may legitimately be -inf before any evaluation.)"""
    return [state.get(k) for k in ("agent", "algo", "reward_normalizer")]


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except OSError:
        raise  # permission denied, an I/O error: the machine's failure, not the file's
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged or not a stridelab checkpoint ({type(e).__name__})") from None
    missing = [k for k in ("agent", "config", "env_spec", "global_step") if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a stridelab checkpoint (missing {', '.join(missing)})")
    spec = state["env_spec"]
    if not isinstance(spec, dict) or not all(k in spec for k in ("name", "obs_dim", "act_dim")):
        raise CheckpointError(f"checkpoint {str(path)!r} is not a stridelab checkpoint (no task description)")
    if not all_finite(_learned_state(state)):
        raise CheckpointError(f"checkpoint {str(path)!r} holds NaN or infinite weights; use an earlier one")
    return state


def check_matches(state: dict[str, Any], path: Path, name: str, obs_dim: int, act_dim: int) -> None:
    """Raise :class:`CheckpointError` when the checkpoint was made for another task or sizes."""
    spec = state["env_spec"]
    if (spec["name"], int(spec["obs_dim"]), int(spec["act_dim"])) != (name, obs_dim, act_dim):
        raise CheckpointError(
            f"checkpoint {str(path)!r} is for task {spec['name']!r} (obs {spec['obs_dim']}, act {spec['act_dim']}), "
            f"not {name!r} (obs {obs_dim}, act {act_dim})"
        )


def load_weights(module: torch.nn.Module, weights: Any, path: Path) -> None:
    """``module.load_state_dict`` with a one-line :class:`CheckpointError` on any mismatch."""
    try:
        module.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit this network ({first})") from None
