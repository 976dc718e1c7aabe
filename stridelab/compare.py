"""``stridelab compare``: train every (algorithm, seed) on one task, then write the report.

Layout, one TensorBoard logdir for everything (``tensorboard --logdir DIR``)::

    DIR/compare.json            the grid and budget
    DIR/<algo>_s<seed>/         one run directory each (config.json, tb/, checkpoints/, summary.json)
    DIR/media/                  videos of each algorithm's best policy, and all side by side
    DIR/report.md, report.html  the comparison

A run with a ``summary.json`` is finished and skipped; one with a checkpoint is resumed; the rest
start fresh. So an interrupted ``compare`` continues when started again with the same command.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stridelab.checkpoint import CKPT_DIR
from stridelab.errors import ConfigError, unknown_choice


@dataclass
class RunSpec:
    algo: str
    seed: int
    run_dir: Path

    @property
    def name(self) -> str:
        return self.run_dir.name

    def status(self) -> str:
        if (self.run_dir / "summary.json").is_file():
            return "done"
        if any((self.run_dir / CKPT_DIR).glob("*.ckpt")):  # resume falls back past a damaged last.ckpt
            return "partial"
        return "new"


def plan_runs(out: Path, algos: list[str], seeds: int) -> list[RunSpec]:
    return [RunSpec(algo, seed, out / f"{algo}_s{seed}") for algo in algos for seed in range(1, seeds + 1)]


def available_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def default_jobs() -> int:
    """One run per core on CPU; one at a time when a CUDA GPU does the work.

    On CPU a run's physics dispatch and update are largely serial: two runs pinned to one core
    each train 1.7x faster together than one run spread over both (docs/benchmarks.md).
    """
    import torch

    return 1 if torch.cuda.is_available() else len(available_cpus())


EVALUATIONS = 8  # per compared run, besides the one at step 0


def _command(spec: RunSpec, env: str, total_steps: int | None, extra: list[str], progress: bool) -> list[str]:
    base = [sys.executable, "-m", "stridelab", "train"]
    flags = ["--progress" if progress else "--no-progress"]
    if total_steps is not None and not any(a == "--eval-every" or a.startswith("--eval-every=") for a in extra):
        # Eight evaluations per run after the untrained policy's at step 0: a curve with a shape.
        extra = [*extra, "--eval-every", str(max(total_steps // EVALUATIONS, 1))]
    if total_steps is not None:
        flags += ["--total-steps", str(total_steps)]
    if spec.status() == "partial":
        return base + ["--resume", str(spec.run_dir), *flags]
    # "new": no checkpoint to continue from; what a run killed before its first one left (config.json,
    # a few TensorBoard events) is replaced, so its steps are not logged twice.
    return base + ["--algo", spec.algo, "--env", env, "--seed", str(spec.seed), "--run-dir", str(spec.run_dir),
                   "--overwrite", *flags, *extra]


def run_grid(specs: list[RunSpec], env: str, total_steps: int | None, extra: list[str], jobs: int) -> list[RunSpec]:
    """Train the unfinished runs, ``jobs`` at a time; returns the runs that failed."""
    todo = [s for s in specs if s.status() != "done"]
    for s in specs:
        if s.status() == "done":
            print(f"[compare] {s.name}: finished earlier, skipped")
    running: list[tuple[RunSpec, subprocess.Popen]] = []
    failed: list[RunSpec] = []

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    cpus = available_cpus()
    pin = jobs > 1 and jobs <= len(cpus)
    free = [tuple(cpus[i::jobs]) for i in range(jobs)] if pin else []
    try:
        while todo or running:
            while todo and len(running) < jobs:
                running.append(_start_run(todo.pop(0), env, total_steps, extra, jobs, free.pop(0) if pin else ()))
            time.sleep(0.5)
            for spec, proc in list(running):
                if proc.poll() is None:
                    continue
                running.remove((spec, proc))
                if pin:
                    free.append(proc.cores)  # type: ignore[attr-defined]
                if not _finished(spec, proc):
                    failed.append(spec)
    except KeyboardInterrupt:
        for _, proc in running:  # each run writes a checkpoint and stops
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for _, proc in running:
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    return failed


def _start_run(spec: RunSpec, env: str, total_steps: int | None, extra: list[str], jobs: int,
               cores: tuple[int, ...]) -> tuple[RunSpec, subprocess.Popen]:
    """Start one run as a child process, its output in a log beside the run (pinned to ``cores``)."""
    verb = "resuming" if spec.status() == "partial" else "training"
    print(f"[compare] {verb} {spec.name}", flush=True)
    spec.run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = open(spec.run_dir.parent / f".{spec.name}.log", "a")  # noqa: SIM115 - closed with the run
    child_env = dict(os.environ)
    if cores:  # one core and one torch thread per run (read by stridelab.cli.main)
        child_env.update(STRIDELAB_CPUS=",".join(map(str, cores)), OMP_NUM_THREADS=str(len(cores)))
    # Its own session: a terminal's Ctrl-C reaches compare alone, which passes on exactly
    # one SIGINT (a second one would abort a run before its stop checkpoint). Its own session
    # also means nothing else would stop it when compare dies without passing anything on
    # (kill -9), hence the parent-death signal.
    proc = subprocess.Popen(_command(spec, env, total_steps, extra, progress=jobs == 1),
                            stdout=log, stderr=None if jobs == 1 else log, env=child_env, start_new_session=True,
                            preexec_fn=die_with_parent(os.getpid()) if sys.platform == "linux" else None)
    proc.log = log  # type: ignore[attr-defined]
    proc.cores = cores  # type: ignore[attr-defined]
    return spec, proc


def die_with_parent(parent: int) -> Callable[[], None]:
    """Run in the child between fork and exec: the kernel sends it SIGTERM when compare dies,
    however compare dies (kill -9 included).

    Why the kernel's parent-death signal (Linux's prctl PR_SET_PDEATHSIG) and not a watchdog
    thread in the child polling its parent's pid: it needs nothing from the child (a watchdog
    would have to start in every run and could not act while the child sits in a long C call
    holding the interpreter, such as JAX compiling), it acts at once instead of at the next poll,
    and the setting survives exec. SIGTERM, not SIGKILL: the run stops at the end of its
    iteration with a checkpoint (stridelab.runner), so nothing trained is lost; its lock on the
    run directory goes with it, and a re-run of compare finds no live writer.
    """
    import ctypes

    def set_death_signal() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # compare died before the prctl above: nobody would signal
            os._exit(1)

    return set_death_signal


def _finished(spec: RunSpec, proc: subprocess.Popen) -> bool:
    """Close the run's log and say how it ended; whether it succeeded."""
    proc.log.close()  # type: ignore[attr-defined]
    if proc.returncode == 0:
        summary = json.loads((spec.run_dir / "summary.json").read_text())
        print(f"[compare] {spec.name} finished: eval return {summary.get('eval/episodic_return', float('nan')):.0f}, "
              f"{summary['charts/SPS']:,.0f} steps/s", flush=True)
        return True
    print(f"[compare] {spec.name} failed (exit {proc.returncode}); log: "
          f"{spec.run_dir.parent / f'.{spec.name}.log'}", flush=True)
    return False


def run_grid_ray(specs: list[RunSpec], env: str, total_steps: int | None, extra: list[str],
                 address: str | None = None, cpus_per_run: float = 1.0, gpus_per_run: float = 0.0) -> list[RunSpec]:
    """Train the unfinished runs as Ray tasks (:func:`run_on_ray`); returns the runs that failed.
    Every task writes into ``DIR/<algo>_s<seed>`` as a local run would, so ``DIR`` must be on a
    filesystem the nodes share, and the nodes need the same Python environment."""
    todo = [s for s in specs if s.status() != "done"]
    for s in specs:
        if s.status() == "done":
            print(f"[compare] {s.name}: finished earlier, skipped")
    jobs = []
    for spec in todo:
        spec.run_dir.parent.mkdir(parents=True, exist_ok=True)
        verb = "resuming" if spec.status() == "partial" else "training"
        print(f"[compare] {verb} {spec.name} (Ray task)", flush=True)
        jobs.append((_command(spec, env, total_steps, extra, progress=False), spec.run_dir.parent / f".{spec.name}.log"))
    failed: list[RunSpec] = []

    def finished(i: int, code: int) -> None:
        spec = todo[i]
        if code == 0:
            summary = json.loads((spec.run_dir / "summary.json").read_text())
            print(f"[compare] {spec.name} finished: eval return "
                  f"{summary.get('eval/episodic_return', float('nan')):.0f}, {summary['charts/SPS']:,.0f} steps/s",
                  flush=True)
        else:
            failed.append(spec)
            print(f"[compare] {spec.name} failed (exit {code}); log: {jobs[i][1]}", flush=True)

    run_on_ray(jobs, finished, address, cpus_per_run, gpus_per_run)
    return failed


def check_launcher(launcher: str, ray_address: str | None, cpus_per_run: float, gpus_per_run: float) -> None:
    """One line for a launcher that cannot run: unknown, Ray missing, or Ray's settings out of range."""
    if launcher not in ("local", "ray"):
        raise unknown_choice("launcher", launcher, ("local", "ray"))
    if launcher == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise ConfigError("--launcher ray needs Ray: pip install 'stridelab[ray]'")
        if cpus_per_run <= 0 or gpus_per_run < 0:
            raise ConfigError(f"--ray-cpus-per-run must be > 0 and --ray-gpus-per-run >= 0, got "
                              f"{cpus_per_run} and {gpus_per_run}")
    elif ray_address:
        raise ConfigError("--ray-address needs --launcher ray")


def run_on_ray(jobs: list[tuple[list[str], Path]], finished: Callable[[int, int], None], address: str | None = None,
               cpus_per_run: float = 1.0, gpus_per_run: float = 0.0) -> None:
    """Run each ``(command, log file)`` as one Ray task asking for ``cpus_per_run`` cores and
    ``gpus_per_run`` GPUs, and call ``finished(index, exit code)`` as each ends.

    ``address`` names a running Ray cluster (``ray start --head`` on one machine, ``ray start
    --address=HEAD:6379`` on the others); ``None`` starts a local one on this machine. Interrupted,
    the tasks are cancelled: each run's last checkpoint lets the same command resume it.
    """
    if not jobs:
        return
    import ray

    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
             **({} if address else {"include_dashboard": False}))
    threads = str(max(1, int(cpus_per_run)))

    @ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)
    def run(cmd: list[str], log_path: str) -> int:
        with open(log_path, "a") as log:
            return subprocess.run(cmd, stdout=log, stderr=log, env={**os.environ, "OMP_NUM_THREADS": threads}).returncode

    pending = {run.remote(cmd, str(Path(log).resolve())): i for i, (cmd, log) in enumerate(jobs)}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                try:
                    code = ray.get(ref)
                except ray.exceptions.RayError as e:  # its worker or node died, or its log could not be opened
                    print(f"[ray] the task for {jobs[i][1]} failed: {type(e).__name__}: "
                          f"{(str(e).strip().splitlines() or [''])[-1]}", flush=True)
                    code = -1
                finished(i, code)
    except BaseException:  # interrupted, or a finished run could not be recorded: stop the rest
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if not address:
            ray.shutdown()


def check_budgets(specs: list[RunSpec], total_steps: int) -> None:
    """Refuse to mix budgets: runs already in the directory must have been asked for the same one."""
    for spec in specs:
        config = spec.run_dir / "config.json"
        if config.is_file():
            trained = json.loads(config.read_text()).get("total_steps")
            if trained != total_steps:
                raise ValueError(
                    f"{spec.run_dir} was trained with --total-steps {trained}, not {total_steps}; "
                    f"use --total-steps {trained} to finish this comparison or another --out for a new one"
                )


VIDEO_SEED = 0  # every best policy is filmed from the start state this seed draws


def render_best(out: Path, specs: list[RunSpec], steps: int | None = None) -> dict[str, dict[str, str]]:
    """GIF and MP4 of each algorithm's best seed (by final evaluation return), each from the
    same start state, and, with two algorithms or more, all of them side by side in one video
    (``media/side_by_side.mp4``, its GIF for the report). ``steps``: at most that many env
    steps (default: :func:`~stridelab.render.record_episode`'s, the task's whole script)."""
    from stridelab.evaluate import load_agent
    from stridelab.render import record_episode, render_frames

    media: dict[str, dict[str, str]] = {}
    shown: dict[str, list[np.ndarray]] = {}
    dt = 0.05
    for algo in dict.fromkeys(s.algo for s in specs):
        best = _best_run(specs, algo)
        if best is None:
            continue
        agent, cfg, _ = load_agent(best.run_dir)
        traj = record_episode(agent, cfg, steps, seed=VIDEO_SEED)
        frames, dt = render_frames(traj), traj.dt  # rendered once: MP4 at full size, GIF (for the report) smaller
        media[algo] = {"run": best.name, **_write_media(out, algo, frames, dt, scale=200 / frames[0].shape[1])}
        # The clip's own return (not the run's evaluation): what the viewer sees these robots earn.
        shown[f"{best.name}: {traj.episode_return:.0f} over {traj.steps} steps"] = frames
        print(f"[compare] {algo}: best run {best.name}, video {out / media[algo]['mp4']}", flush=True)
    if len(shown) > 1:
        from stridelab.render import side_by_side

        _write_media(out, "side_by_side", side_by_side(shown), dt, scale=0.625)
        print(f"[compare] side by side from the same start state: {out / 'media' / 'side_by_side.mp4'}", flush=True)
    (out / "media").mkdir(parents=True, exist_ok=True)
    (out / "media" / "media.json").write_text(json.dumps(media, indent=2) + "\n")
    return media


def _best_run(specs: list[RunSpec], algo: str) -> RunSpec | None:
    """The finished run of ``algo`` with the highest final evaluation return."""
    def score(s: RunSpec) -> float:
        value = json.loads((s.run_dir / "summary.json").read_text()).get("eval/episodic_return")
        return float("-inf") if value is None else float(value)

    done = [s for s in specs if s.algo == algo and s.status() == "done"]
    return max(done, key=score) if done else None


def _write_media(out: Path, name: str, frames: list[np.ndarray], dt: float, scale: float) -> dict[str, str]:
    """``media/<name>.mp4`` at full size and ``media/<name>.gif`` (for the report) at ``scale``,
    every second frame at half the frame rate (still real time)."""
    from PIL import Image

    from stridelab.render import write_video

    mp4 = write_video(frames, out / "media" / f"{name}.mp4", fps=1.0 / dt)
    height, width = frames[0].shape[:2]
    size = (round(width * scale), round(height * scale))
    small = [np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR)) for f in frames[::2]]
    gif = write_video(small, out / "media" / f"{name}.gif", fps=0.5 / dt)
    return {"gif": str(gif.relative_to(out)), "mp4": str(mp4.relative_to(out))}
