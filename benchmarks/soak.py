"""Soak: start / kill -9 at a random moment / resume, many times over, then check nothing was lost.

    python benchmarks/soak.py --cycles 50                 # Brax Ant and Hopper-v5, 50 kills each
    nice -n 19 python benchmarks/soak.py --cycles 5       # a short proof on a busy machine

Each cycle starts ``stridelab train`` (fresh the first time, ``--resume`` afterwards; fresh with
``--overwrite`` again while no checkpoint exists yet) and sends SIGKILL after a random delay: in
start-up, mid-iteration or mid-checkpoint. After the last cycle the run is resumed to the end.
Then it checks that the run ends at the global step an uninterrupted run ends at, that every
checkpoint left in the run directory loads (intact, finite), and that TensorBoard's curve (read
with its own EventAccumulator, as TensorBoard shows it) has every step once, with no gap.
Not part of ``make test``: it takes minutes per task. Writes ``OUT/soak.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

# Tiny settings; the kill window: seconds of training after this process's first checkpoint;
# iterations per cycle: about what the window's longest kill trains on a quiet machine, so that
# the run is still training at the last kill (Hopper's iterations are 4 x quicker than Ant's).
TASKS = {
    "ant": {"flags": ["--num-envs", "32", "--num-steps", "16", "--num-minibatches", "4", "--vf-minibatches", "4"],
            "batch": 512, "window": (0.0, 8.0), "iterations_per_cycle": 12},
    "Hopper-v5": {"flags": ["--num-envs", "4", "--num-steps", "64", "--num-minibatches", "4", "--vf-minibatches",
                            "4", "--update-epochs", "2", "--vf-epochs", "2"], "batch": 256, "window": (0.0, 8.0),
                  "iterations_per_cycle": 60},
}
STARTUP_SHARE, STARTUP_WINDOW = 0.2, (0.5, 10.0)
COMMON = ["--eval-episodes", "0", "--no-progress", "--checkpoint-every", "1", "--keep-checkpoints", "3"]


def _command(task: str, run: Path, total: int) -> list[str]:
    base = [sys.executable, "-m", "stridelab", "train"]
    if any((run / "checkpoints").glob("*.ckpt")):
        return [*base, "--resume", str(run)]
    return [*base, "--env", task, "--run-dir", str(run), "--total-steps", str(total), "--overwrite",
            *TASKS[task]["flags"], *COMMON]


def soak(task: str, out: Path, cycles: int, total: int, rng: random.Random) -> dict:
    run = out / task
    log = open(out / f"{task}.log", "a")  # noqa: SIM115 - closed below
    kills, finished_early = [], 0
    for cycle in range(cycles):
        started = time.time()
        proc = subprocess.Popen(_command(task, run, total), stdout=log, stderr=log)
        # One kill in five lands in start-up (imports, JAX compiling); the others at a random
        # moment of training, counted from this process's first checkpoint.
        in_startup = rng.random() < STARTUP_SHARE
        if not in_startup:
            _wait_for_checkpoint(run, started, proc)
        delay = rng.uniform(*(STARTUP_WINDOW if in_startup else TASKS[task]["window"]))
        try:
            proc.wait(timeout=delay)
            finished_early += 1  # the run reached its end before the kill
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        kills.append({"cycle": cycle, "in_startup": in_startup, "delay_s": round(delay, 2),
                      "after_s": round(time.time() - started, 1), "step": _saved_step(run)})
        print(f"[soak] {task} cycle {cycle + 1}/{cycles}: killed {kills[-1]['after_s']} s after start "
              f"({'in start-up' if in_startup else f'{delay:.1f} s into training'}), checkpoint at step "
              f"{kills[-1]['step']}", flush=True)
    t = time.perf_counter()
    final = subprocess.run(_command(task, run, total), stdout=log, stderr=log)
    log.close()
    # A kill after the run reached its end tests nothing: counted, so a too-short run shows.
    after_end = sum(k["step"] == end_step(total, task) for k in kills)
    return {"task": task, "cycles": cycles, "finished_before_kill": finished_early, "kills_after_end": after_end,
            "kills": kills,
            "final_exit": final.returncode, "final_s": round(time.perf_counter() - t, 1), **check(run, total, task)}


def _wait_for_checkpoint(run: Path, started: float, proc: subprocess.Popen) -> None:
    last = run / "checkpoints" / "last.ckpt"
    while proc.poll() is None and not (last.is_file() and last.stat().st_mtime > started):
        time.sleep(0.2)


def _saved_step(run: Path) -> int | None:
    from stridelab.rundir import choose_checkpoint

    try:
        return int(choose_checkpoint(run, warn=lambda m: None)[1]["global_step"])
    except Exception:  # noqa: BLE001 - nothing saved yet
        return None


def end_step(total: int, task: str) -> int:
    """Where an uninterrupted run of ``total`` steps ends: whole batches only."""
    return (total // TASKS[task]["batch"]) * TASKS[task]["batch"]


def check(run: Path, total: int, task: str) -> dict:
    """The end step, every checkpoint loading, the curve without gaps or duplicate steps."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from stridelab.checkpoint import load_checkpoint

    batch, expected = TASKS[task]["batch"], end_step(total, task)
    summary = json.loads((run / "summary.json").read_text())
    bad = []
    files = sorted((run / "checkpoints").rglob("*.ckpt"))
    for f in files:
        try:
            load_checkpoint(f)
        except Exception as e:  # noqa: BLE001 - counted and reported
            bad.append(f"{f.name}: {e}")
    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    steps = [e.step for e in acc.Scalars("charts/SPS")]
    want = list(range(batch, expected + 1, batch))
    return {"expected_step": expected, "final_step": int(summary["global_step"]), "checkpoints": len(files),
            "unloadable": bad, "curve_points": len(steps), "duplicates": len(steps) - len(set(steps)),
            "gaps": len(set(want) - set(steps)), "curve_ok": steps == want,
            "ok": int(summary["global_step"]) == expected and not bad and steps == want}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--cycles", type=int, default=50, help="kills per task (default 50)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--total-steps", type=int, default=None,
                        help="per task (default: the task's iterations per cycle x cycles + 20 iterations)")
    parser.add_argument("--out", default="runs/soak")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    results = []
    for task in args.tasks:
        # Long enough that the kills land in training, short enough to finish after them.
        total = args.total_steps or TASKS[task]["batch"] * (TASKS[task]["iterations_per_cycle"] * args.cycles + 20)
        t = time.perf_counter()
        result = soak(task, out, args.cycles, total, rng)
        result["wall_s"] = round(time.perf_counter() - t, 1)
        results.append(result)
        print(f"[soak] {task}: {'OK' if result['ok'] else 'FAILED'} - {json.dumps({k: v for k, v in result.items() if k != 'kills'})}",
              flush=True)
    (out / "soak.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
