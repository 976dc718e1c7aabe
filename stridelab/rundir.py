"""A run directory's rules: one writer at a time, no silent overwrite, and which checkpoint a
reader uses.

- **One writer.** A writer (``train``, ``train --resume``, each of ``compare``'s runs) holds an
  exclusive ``flock`` on ``RUN/.lock`` for as long as it lives. The kernel drops the lock when
  the process ends, however it ends (kill -9 included), so a lock file left behind is never
  stale: the next writer simply takes it. A second writer is refused with the live one's pid.
- **No silent overwrite.** A fresh ``train`` into a directory that already holds a run refuses
  unless asked to ``--resume`` it or to ``--overwrite`` it (which first removes the old run's
  files, so nothing of it mixes with the new one).
- **The newest intact checkpoint.** Readers try ``last.ckpt``, then the step checkpoints newest
  first, then ``best.ckpt`` (written at an evaluation, usually older than the newest step file,
  and resuming from it would rewind the most), and use the first that loads and holds finite
  numbers, with a one-line warning naming the damaged file and the one used.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from stridelab.checkpoint import CKPT_DIR, CheckpointError, load_checkpoint, step_files
from stridelab.errors import ConfigError, RunDirBusy

try:
    import fcntl
except ImportError:  # not a POSIX system: no lock (the rest still applies)
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
# What ``train`` writes (and ``--overwrite`` removes); ``export``'s and ``video``'s default
# files too, since they show the old policy.
RUN_FILES = ("checkpoints", "tb", "summary.json", "config.json")
OLD_POLICY_FILES = ("policy.onnx", "policy.pt2", "policy.pt", "walk.mp4", "walk.gif", "walk.html")

_held: dict[str, IO[str]] = {}  # run directories this process writes, by real path


def check_is_directory(run_dir: Path, flag: str = "--run-dir") -> None:
    """A run directory given as the path of a file: one line naming it."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{flag} {str(run_dir)!r} is a file, not a directory")


def acquire(run_dir: Path) -> bool:
    """Become the run directory's one writer (creating it); ``False`` when this process already
    is. Raises :class:`RunDirBusy` naming the live writer's pid."""
    run_dir = Path(run_dir)
    key = os.path.realpath(run_dir)
    if key in _held:
        return False
    check_is_directory(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        return False
    f = open(run_dir / LOCK_NAME, "a+")  # noqa: SIM115 - held open for the life of the writer
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip() or "unknown"
        f.close()
        raise RunDirBusy(f"run directory {str(run_dir)!r} is being written by another stridelab process "
                         f"(pid {pid}); wait for it to finish or stop it first") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    _held[key] = f
    for partial in (run_dir / CKPT_DIR).glob(".*.tmp"):  # a writer killed mid-write; nobody else writes now
        partial.unlink(missing_ok=True)
    return True


def release(run_dir: Path) -> None:
    f = _held.pop(os.path.realpath(run_dir), None)
    if f is not None:
        f.close()  # closing the last descriptor drops the flock


@contextmanager
def writer(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock inside the block (kept if this process held it already)."""
    took = acquire(run_dir)
    try:
        yield
    finally:
        if took:
            release(run_dir)


def previous_run(run_dir: Path) -> list[str]:
    """The files of an earlier run in ``run_dir`` (empty when there is none)."""
    if not run_dir.is_dir():
        return []
    return [name for name in RUN_FILES if (run_dir / name).exists()]


def start_fresh(run_dir: Path, overwrite: bool) -> None:
    """Refuse to start a new run over an old one unless ``overwrite``; with it, remove the old
    run's files first. Call it holding the lock."""
    found = previous_run(run_dir)
    if not found:
        return
    if not overwrite:
        raise ConfigError(f"run directory {str(run_dir)!r} already holds a run ({', '.join(found)}); "
                          f"continue it with --resume {run_dir} or start over with --overwrite")
    for name in (*RUN_FILES, *OLD_POLICY_FILES):
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def check_resume_target(resume: str, run_dir: str | None) -> None:
    """``--resume R --run-dir X``: a resumed run stays in its own directory."""
    if run_dir is not None and os.path.realpath(run_dir) != os.path.realpath(resume):
        raise ConfigError(f"--run-dir {run_dir!r} differs from --resume {resume!r}: a resumed run stays in its "
                          f"directory; drop --run-dir (or copy the run there and resume that)")


# --------------------------------------------------------------------------------------------
# which checkpoint a reader uses


def candidates(run_dir: Path) -> list[Path]:
    """The run's checkpoints in the order readers try them: last, steps newest first, best."""
    ckpt_dir = Path(run_dir) / CKPT_DIR
    steps = [p for _, p in reversed(step_files(ckpt_dir))]
    return [p for p in [ckpt_dir / "last.ckpt", *steps, ckpt_dir / "best.ckpt"] if p.is_file()]


def _warn(message: str) -> None:
    print(f"stridelab: warning: {message}", file=sys.stderr, flush=True)


def choose_checkpoint(run_dir: Path, checkpoint: str | None = None, map_location: Any = "cpu",
                      warn: Callable[[str], None] = _warn) -> tuple[Path, dict[str, Any]]:
    """The checkpoint a reader of ``run_dir`` uses and its loaded state: ``checkpoint`` (a path,
    or a file name in ``RUN/checkpoints``) when given, else the newest intact one."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        check_is_directory(run_dir, "run directory")
        raise CheckpointError(f"run directory {str(run_dir)!r} does not exist")
    if checkpoint is not None:
        path = _named_checkpoint(run_dir, checkpoint)
        state = load_checkpoint(path, map_location=map_location)
        check_belongs(run_dir, path, state)
        return path, state
    found = candidates(run_dir)
    if not found:
        raise CheckpointError(f"no checkpoint in {str(run_dir)!r} (expected {CKPT_DIR}/last.ckpt)")
    damaged: list[str] = []
    for path in found:
        try:
            state = load_checkpoint(path, map_location=map_location)
        except CheckpointError as e:
            damaged.append(str(e))
            continue
        check_belongs(run_dir, path, state)
        if damaged:
            more = f" (and {len(damaged) - 1} more unusable)" if len(damaged) > 1 else ""
            warn(f"{damaged[0]}{more}; using {str(path)!r} (step {int(state['global_step']):,}) instead")
        return path, state
    more = f"; the {len(damaged) - 1} other(s) are unusable too" if len(damaged) > 1 else ""
    raise CheckpointError(f"no intact checkpoint in {str(run_dir)!r}: {damaged[0]}{more}")


def check_has_checkpoint(run_dir: Path, checkpoint: str | None = None) -> None:
    """Before any work, loading nothing: ``checkpoint`` names a file, or (``None``) the run has
    a checkpoint to start from (whether it is intact is for :func:`choose_checkpoint`)."""
    if checkpoint is not None:
        _named_checkpoint(Path(run_dir), checkpoint)
    elif not candidates(run_dir):
        raise CheckpointError(f"no checkpoint in {str(run_dir)!r} (expected {CKPT_DIR}/last.ckpt)")


def _named_checkpoint(run_dir: Path, name: str) -> Path:
    for path in (Path(name), run_dir / CKPT_DIR / name, run_dir / CKPT_DIR / f"{name}.ckpt"):
        if path.is_file():
            return path
    names = ", ".join(p.name for p in candidates(run_dir)) or "none"
    raise ConfigError(f"--checkpoint {name!r}: no such file, nor in {str(run_dir / CKPT_DIR)!r} "
                      f"(it holds: {names})")


def check_belongs(run_dir: Path, path: Path, state: dict[str, Any]) -> None:
    """Refuse a checkpoint made for another task than the run's ``config.json`` names."""
    try:
        env = json.loads((Path(run_dir) / "config.json").read_text()).get("env")
    except (OSError, ValueError, AttributeError):
        return  # no readable config.json: the checkpoint's own config is all there is
    spec = state["env_spec"]
    if env is not None and env != spec["name"]:
        raise CheckpointError(f"checkpoint {str(path)!r} is for task {spec['name']!r} (obs {spec['obs_dim']}, "
                              f"act {spec['act_dim']}), but run {str(run_dir)!r} trains {env!r} (its config.json); "
                              f"it does not belong to this run")


def set_aside_later_checkpoints(run_dir: Path, step: int) -> list[Path]:
    """Resuming from step ``step`` while later step files exist (an older checkpoint was chosen):
    move those to ``checkpoints/superseded/`` so the keep-last-K rotation does not delete the
    new run's files in their favour, and nothing is deleted."""
    ckpt_dir = Path(run_dir) / CKPT_DIR
    moved = []
    for path_step, path in step_files(ckpt_dir):
        if path_step > step:
            target = ckpt_dir / "superseded" / path.name
            target.parent.mkdir(exist_ok=True)
            path.replace(target)
            moved.append(target)
    return moved
