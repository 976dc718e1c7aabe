"""The GPU check: one command for the day a GPU machine is lent, and its rehearsal on the CPU.

    benchmarks/gpu_check.sh                        # on a fresh GPU machine: at most 8 minutes
    python3 benchmarks/gpu_check.py --rehearsal    # the same stages on the CPU at tiny sizes

Stages, in order, each with its own time budget (``--budget STAGE=SECONDS``), enforced by killing
the stage's process group when it is spent; a stage that times out or fails is recorded as such
and the next one runs:

* ``install``: ``make install`` (JAX's CUDA plugin where ``nvidia-smi`` is); the rehearsal only
  plans it (``make -n``), and both record whether the CUDA extra is part of the plan.
* ``devices``: torch's and JAX's devices, and one DLPack hand-over between them.
* ``tests``: the GPU-related tests (``-k "gpu or cuda"``) and a fast sample of the suite.
* ``throughput``: steps/s at each env count for the simulator alone, stridelab PPO, Brax's own
  PPO and stridelab TRPO, with the measurement functions of ``benchmarks/throughput.py`` (same
  settings), one process per measurement, with peak GPU memory from torch and JAX.
* ``training``: ``stridelab train --algo ppo --env ant`` for about two minutes of wall-clock
  (stopped by SIGTERM, which makes it checkpoint and exit), then the evaluation return against
  time from its TensorBoard events.

Writes ``results.json`` and ``results.md`` under the results folder (``--out``; by default
``benchmarks/results/gpu_check/<date>-<host>``) and prints where. The orchestrator uses the
standard library only, so it runs before the virtual environment exists; everything that needs
torch or JAX runs in a child process (``python -m benchmarks.gpu_check child ...``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("install", "devices", "tests", "throughput", "training")
# Measured in this order at each size: the ratios the goals are about come first.
PARTS = ("simulator", "stridelab-ppo", "brax-ppo", "stridelab-trpo")
STEPS_PER_ENV = 16  # stridelab's Brax preset (--num-steps), passed explicitly to the training run
RESULT_PREFIX = "GPU_CHECK_RESULT "  # marks a child's result line among whatever else it prints
GOAL_PPO_OVER_SIMULATOR = 0.85
GOAL_PPO_OVER_BRAX = 1.0
GPU_TESTS = ["-k", "gpu or cuda", "tests/test_brax_env.py", "tests/test_trpo_optim.py", "tests/test_cli.py",
             "tests/test_install.py"]


@dataclass
class Plan:
    """What the check runs, and how long each stage may take (seconds)."""

    rehearsal: bool
    sizes: list[int]
    budgets: dict[str, float]
    sim_seconds: float  # timed seconds of the simulator alone, per size
    iterations: int  # timed training iterations per throughput measurement (after the first)
    child_timeout_s: float  # one throughput measurement at most: a hung one cannot eat the stage
    train_num_envs: int
    train_seconds: float | None  # SIGTERM the training run this long after its start
    train_steps: int | None  # None: from the PPO steps/s measured at train_num_envs
    fallback_sps: float  # steps/s assumed when the throughput stage measured none
    eval_points: int
    eval_episodes: int
    episode_length: int | None
    tests: dict[str, list[str]]
    env: str = "ant"
    backend: str = "spring"
    stages: tuple[str, ...] = STAGES


GPU_PLAN = Plan(
    rehearsal=False, sizes=[2048, 8192, 32768],
    # 475 s in all: a slow stage ends at its budget and the whole check stays within 8 minutes.
    # Training: 120 s, then STOP_GRACE_S to checkpoint and READ_RESERVE_S to read its events.
    budgets={"install": 100, "devices": 20, "tests": 45, "throughput": 165, "training": 145},
    sim_seconds=3, iterations=3, child_timeout_s=60,
    train_num_envs=2048, train_seconds=120, train_steps=None, fallback_sps=50_000,
    eval_points=6, eval_episodes=16, episode_length=None,
    tests={"gpu": GPU_TESTS, "sample": ["-x", "tests/test_gae.py", "tests/test_trpo_optim.py",
                                        "tests/test_brax_env.py", "tests/test_losses.py", "tests/test_models.py"]},
)

# Tiny sizes, generous budgets: the rehearsal is about every stage running to the end on a
# loaded 2-core machine, not about speed (the test suite runs it: each of its seconds counts).
# Training: two iterations, each followed by an evaluation, after the one at step 0. The task is
# Brax's smallest, the inverted pendulum: the stages' code is the same for every task, and Ant's
# programs (Brax's own PPO's above all) cost it a minute more of CPU on an empty compilation cache
# (182 s against 124 s, tests/test_gpu_check.py, both beside the same training run).
REHEARSAL_PLAN = replace(
    GPU_PLAN, rehearsal=True, sizes=[64], env="inverted_pendulum",
    budgets={"install": 30, "devices": 60, "tests": 120, "throughput": 240, "training": 120},
    sim_seconds=0.25, iterations=1, child_timeout_s=120,
    train_num_envs=64, train_seconds=None, train_steps=2048, fallback_sps=1_000,
    eval_points=2, eval_episodes=4, episode_length=50,
    tests={"gpu": GPU_TESTS, "sample": ["-x", "tests/test_gae.py"]},
)


class StageTimeout(Exception):
    """A child was killed because the stage's budget was spent."""


class StageFailed(Exception):
    """A stage could not produce its result; the message says why, in one line."""


@dataclass
class Child:
    """One finished child process."""

    rc: int | None
    out: str
    err: str
    seconds: float
    timed_out: bool = False  # killed at its deadline
    stopped: bool = False  # sent SIGTERM at its stop time (then exited, or was killed)

    def result(self) -> dict | None:
        """The child's result line (the last one), parsed, or None."""
        lines = [ln for ln in self.out.splitlines() if ln.startswith(RESULT_PREFIX)]
        return json.loads(lines[-1][len(RESULT_PREFIX):]) if lines else None

    def tail(self, n: int = 3) -> str:
        """The last lines of stderr (or stdout), for a one-line failure."""
        lines = (self.err.strip() or self.out.strip()).splitlines()
        return " | ".join(ln.strip() for ln in lines[-n:])


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:  # already gone
        pass


def run_child(cmd: list[str], deadline: float, stop_at: float | None = None,
              env: dict[str, str] | None = None) -> Child:
    """Run ``cmd`` in its own process group until it exits or ``deadline`` (``time.monotonic()``)
    passes, then kill the whole group, so that nothing it started outlives the stage. With
    ``stop_at`` it first gets SIGTERM at that time (a training run then checkpoints and exits)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env or child_env())
    stopped = False
    if stop_at is not None and stop_at < deadline:
        try:
            out, err = proc.communicate(timeout=max(0.0, stop_at - time.monotonic()))
            return Child(proc.returncode, out, err, time.monotonic() - t0)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGTERM)
            stopped = True
    try:
        out, err = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
        return Child(proc.returncode, out, err, time.monotonic() - t0, stopped=stopped)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        out, err = proc.communicate()  # what it wrote before the kill
        return Child(proc.returncode, out, err, time.monotonic() - t0, timed_out=True, stopped=stopped)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    # JAX would otherwise take 75% of the GPU at start, beside torch, and every memory reading
    # would be that reservation (stridelab sets the same when it imports its Brax adapter).
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    return env


class GpuMemorySampler:
    """Samples ``nvidia-smi``'s memory in use (all GPUs together) while a stage runs; the peak
    covers every process and CUDA context, which torch's and JAX's own counters do not."""

    def __init__(self, period_s: float = 0.5) -> None:
        self.smi = shutil.which("nvidia-smi")
        self.period_s = period_s
        self.peak_mib: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> float | None:
        try:
            out = subprocess.run([self.smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=5).stdout
            return float(sum(float(x) for x in out.split()))
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            used = self._read()
            if used is not None:
                self.peak_mib = max(self.peak_mib or 0.0, used)
            self._stop.wait(self.period_s)

    def __enter__(self) -> GpuMemorySampler:
        if self.smi:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


# --- the stages (run by the orchestrator, standard library only) -------------------------------

@dataclass
class Context:
    plan: Plan
    out: Path
    python: str | None  # None: the repository's .venv when the install stage has made it
    results: dict = field(default_factory=dict)

    def py(self) -> str:
        """The interpreter for everything after the install: the one asked for, else the
        repository's .venv (what ``make`` built), else this one."""
        venv = ROOT / ".venv" / "bin" / "python"
        return self.python or (str(venv) if venv.exists() else sys.executable)

    def child(self, *args: str) -> list[str]:
        return [self.py(), "-m", "benchmarks.gpu_check", "child", *args]


def stage_install(ctx: Context, record: dict, deadline: float) -> None:
    """``make install`` (the rehearsal: only its plan), and whether the plan has the CUDA extra."""
    make = shutil.which("make")
    if make is None:
        raise StageFailed("make is not installed")
    plan = run_child([make, "-n", "-B", "install"], deadline)
    if plan.timed_out:
        raise StageTimeout
    pip = [ln for ln in plan.out.splitlines() if "pip install --quiet" in ln and " -e " in ln]
    record["planned_install"] = pip[0].strip() if pip else None
    record["cuda_extra"] = bool(pip) and ",cuda]" in pip[0]
    if ctx.plan.rehearsal:
        record["note"] = "rehearsal: planned (make -n), not run"
        return
    done = run_child([make, "install"], deadline)
    record["make_seconds"] = round(done.seconds, 1)
    if done.timed_out:
        raise StageTimeout
    if done.rc != 0:
        raise StageFailed(f"make install exit {done.rc}: {done.tail()}")


def stage_devices(ctx: Context, record: dict, deadline: float) -> None:
    """torch's and JAX's devices and a DLPack hand-over, from a child with the check's Python."""
    record.update(child_json(ctx.child("devices"), deadline))
    record["nvidia_smi"] = nvidia_smi_gpus()
    on_gpu = record.get("torch_cuda") and record.get("jax_backend") == "gpu"
    record["gpu"] = bool(on_gpu)
    if not on_gpu and not ctx.plan.rehearsal:
        raise StageFailed(f"no GPU for both: torch CUDA {record.get('torch_cuda')}, "
                          f"JAX backend {record.get('jax_backend')}")


def nvidia_smi_gpus() -> list[str] | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    out = subprocess.run([smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=10).stdout
    return [ln.strip() for ln in out.splitlines() if ln.strip()]


def child_json(cmd: list[str], deadline: float) -> dict:
    """A child's result, or StageTimeout / StageFailed."""
    c = run_child(cmd, deadline)
    if c.timed_out:
        raise StageTimeout
    result = c.result()
    if result is None:
        raise StageFailed(f"exit {c.rc}: {c.tail()}")
    return result


def stage_tests(ctx: Context, record: dict, deadline: float) -> None:
    """Each selection of tests in one pytest process; the stage fails if any test does."""
    failed = []
    for name, args in ctx.plan.tests.items():
        c = run_child([ctx.py(), "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], deadline)
        lines = [ln for ln in c.out.splitlines() if re.search(r"\d+ (passed|failed|error|skipped|deselected)", ln)]
        record[name] = {"args": args, "rc": c.rc, "summary": lines[-1].strip("= ") if lines else c.tail(1),
                        "seconds": round(c.seconds, 1)}
        if c.timed_out:
            raise StageTimeout
        if c.rc != 0:
            failed.append(f"{name}: {record[name]['summary']}")
    if failed:
        raise StageFailed("; ".join(failed))


def stage_throughput(ctx: Context, record: dict, deadline: float) -> None:
    """Every part at every size, one process each; a measurement that runs past its own limit is
    recorded and the next one runs; the stage's deadline ends them all."""
    rows: list[dict] = record.setdefault("measurements", [])
    for n in ctx.plan.sizes:
        for part in PARTS:
            if time.monotonic() >= deadline:
                rows.append({"num_envs": n, "part": part, "status": "skipped: the stage's budget was spent"})
                continue
            rows.append(measure(ctx, part, n, deadline))
    if any(r.get("killed_at_stage_deadline") for r in rows):
        raise StageTimeout
    measured = sum("sps" in r for r in rows)
    if measured < len(rows):
        record["status"] = f"partial: {measured} of {len(rows)} measured"


def measure(ctx: Context, part: str, num_envs: int, stage_deadline: float) -> dict:
    """One part at one size in its own process, within ``child_timeout_s`` and the stage's deadline."""
    p = ctx.plan
    cmd = ctx.child("measure", "--part", part, "--num-envs", str(num_envs), "--env", p.env, "--backend", p.backend,
                    "--seconds", str(p.sim_seconds), "--iterations", str(p.iterations))
    own_deadline = time.monotonic() + p.child_timeout_s
    c = run_child(cmd, min(stage_deadline, own_deadline))
    row: dict[str, Any] = {"num_envs": num_envs, "part": part, "process_s": round(c.seconds, 1)}
    result = c.result()
    if c.timed_out:
        row["status"] = f"timed out after {c.seconds:.0f} s"
        row["killed_at_stage_deadline"] = stage_deadline <= own_deadline
    elif result is None:
        row["status"] = f"failed (exit {c.rc}): {c.tail()}"
    else:
        row.update(result, status="ok")
    print(f"  {part} at {num_envs} envs: {row['status']}"
          + (f", {row['sps']:,.0f} steps/s" if "sps" in row else ""), flush=True)
    return row


def stage_training(ctx: Context, record: dict, deadline: float) -> None:
    """PPO on Ant through the CLI, stopped after ``train_seconds``; then its evaluations."""
    p = ctx.plan
    total, every = training_steps(p, ctx.results)
    run_dir = ctx.out / f"{p.env}_ppo_run"
    shutil.rmtree(run_dir, ignore_errors=True)  # a rerun into the same folder starts afresh
    args = ["--algo", "ppo", "--env", p.env, "--backend", p.backend, "--num-envs", str(p.train_num_envs),
            "--num-steps", str(STEPS_PER_ENV), "--total-steps", str(total), "--eval-every", str(every),
            "--eval-episodes", str(p.eval_episodes), "--seed", "1", "--run-dir", str(run_dir), "--no-progress"]
    if p.episode_length:
        args += ["--episode-length", str(p.episode_length)]
    record.update(command="stridelab train " + " ".join(args), total_steps=total, eval_every=every)
    stop_at, kill_at = training_clock(p.train_seconds, time.monotonic(), deadline)
    c = run_child(ctx.child("train", *args), kill_at, stop_at)
    trained = c.result() or {}
    record.update(trained, process_s=round(c.seconds, 1), stopped_at_time_limit=c.stopped)
    record.update(child_json(ctx.child("read-run", str(run_dir)), deadline))
    if c.timed_out:
        raise StageTimeout
    # 128 + SIGTERM: stopped at the time limit as planned, after a checkpoint.
    if trained.get("rc") not in (0, 128 + signal.SIGTERM):
        raise StageFailed(f"stridelab train exit {trained.get('rc', c.rc)}: {c.tail()}")
    if not record.get("eval"):
        raise StageFailed("no evaluation in the run's TensorBoard events")


READ_RESERVE_S = 10.0  # kept at the end of the training stage to read the run's events
STOP_GRACE_S = 15.0  # after SIGTERM: the iteration under way ends, a checkpoint is written


def training_clock(train_seconds: float | None, now: float, deadline: float) -> tuple[float | None, float]:
    """(when to send SIGTERM, when to kill) the training run: the stop at ``train_seconds``, but
    early enough that the run can checkpoint and its events be read within the stage."""
    kill_at = deadline - READ_RESERVE_S
    if train_seconds is None:
        return None, kill_at
    return min(now + train_seconds, kill_at - STOP_GRACE_S), kill_at


def training_steps(p: Plan, results: dict) -> tuple[int, int]:
    """(total steps, steps between evaluations), whole batches. With a time limit, the total is
    twice what the measured (or assumed) speed covers in that time, so the time ends the run."""
    batch = p.train_num_envs * STEPS_PER_ENV
    if p.train_steps:
        total = max(batch, p.train_steps // batch * batch)
        return total, max(batch, total // p.eval_points // batch * batch)
    sps = measured_sps(results, "stridelab-ppo", p.train_num_envs) or p.fallback_sps
    every = max(batch, int(sps * (p.train_seconds or 60) / p.eval_points) // batch * batch)
    return every * p.eval_points * 2, every


def measured_sps(results: dict, part: str, num_envs: int) -> float | None:
    rows = results.get("stages", {}).get("throughput", {}).get("measurements", [])
    return next((r["sps"] for r in rows if r["part"] == part and r["num_envs"] == num_envs and "sps" in r), None)


STAGE_FUNCTIONS: dict[str, Callable[[Context, dict, float], None]] = {
    "install": stage_install, "devices": stage_devices, "tests": stage_tests,
    "throughput": stage_throughput, "training": stage_training,
}


def run_stage(ctx: Context, name: str) -> dict:
    """One stage within its budget; whatever happens, its record says how it ended."""
    budget = float(ctx.plan.budgets[name])
    record: dict[str, Any] = {"status": "running", "budget_s": budget}
    ctx.results["stages"][name] = record
    t0 = time.monotonic()
    print(f"[gpu-check] {name} (budget {budget:g} s)", flush=True)
    with GpuMemorySampler() as smi:
        try:
            STAGE_FUNCTIONS[name](ctx, record, t0 + budget)
            if record["status"] == "running":
                record["status"] = "ok"
        except StageTimeout:
            record["status"] = f"timed out after {budget:g} s"
        except Exception as e:  # noqa: BLE001 - any failure is recorded and the next stage runs
            record["status"] = f"failed: {e}"
    record["seconds"] = round(time.monotonic() - t0, 1)
    record["nvidia_smi_peak_mib"] = smi.peak_mib
    print(f"[gpu-check] {name}: {record['status']} ({record['seconds']:g} s)", flush=True)
    return record


# --- the report -----------------------------------------------------------------------------------

def goals(measurements: list[dict], sizes: list[int]) -> list[dict]:
    """Per size: PPO / simulator against 0.85 and PPO / Brax's PPO against 1, PASS, FAIL or
    unmeasured (a part missing)."""
    rows = []
    for n in sizes:
        sps = {m["part"]: m["sps"] for m in measurements if m["num_envs"] == n and "sps" in m}
        row: dict[str, Any] = {"num_envs": n}
        for key, other, goal in (("ppo_over_simulator", "simulator", GOAL_PPO_OVER_SIMULATOR),
                                 ("ppo_over_brax_ppo", "brax-ppo", GOAL_PPO_OVER_BRAX)):
            ratio = sps["stridelab-ppo"] / sps[other] if "stridelab-ppo" in sps and sps.get(other) else None
            row[key] = ratio
            row[key + "_verdict"] = "unmeasured" if ratio is None else ("PASS" if ratio >= goal else "FAIL")
        rows.append(row)
    return rows


def peak_memory(results: dict) -> dict:
    """The highest readings of the whole check: torch's and JAX's own counters (per process) and
    nvidia-smi's (everything on the GPUs). All null without a GPU."""
    rows = results["stages"].get("throughput", {}).get("measurements", [])
    training = results["stages"].get("training", {})

    def highest(values: list[Any]) -> float | None:
        nums = [v for v in values if isinstance(v, (int, float))]
        return max(nums) if nums else None

    out = {
        "torch_mib": highest([r.get("torch_peak_mib") for r in rows] + [training.get("torch_peak_mib")]),
        "jax_mib": highest([r.get("jax_peak_mib") for r in rows] + [training.get("jax_peak_mib")]),
        "nvidia_smi_mib": highest([s.get("nvidia_smi_peak_mib") for s in results["stages"].values()]),
    }
    if all(v is None for v in out.values()):
        out["note"] = "no GPU memory to read: no CUDA device and no nvidia-smi"
    return out


def _num(x: Any, fmt: str = "{:,.0f}") -> str:
    return fmt.format(x) if isinstance(x, (int, float)) else "-"


def markdown(results: dict) -> str:
    """The results as one Markdown page: stages, throughput and goals, training, memory."""
    dev = results["stages"].get("devices", {})
    where = ("GPU: " + ", ".join(dev.get("torch_devices") or [])) if dev.get("gpu") else "CPU only (no GPU seen)"
    mode = ("rehearsal (tiny sizes on the CPU: the verdicts test the code, not the goals)"
            if results["rehearsal"] else "GPU check")
    lines = [f"# GPU check, {results['date']} on {results['host']}", "",
             f"Mode: {mode}. Devices: {where}; torch {dev.get('torch', '?')}, JAX {dev.get('jax', '?')} "
             f"(backend {dev.get('jax_backend', '?')}). Total {results['total_seconds']:.0f} s.", ""]
    lines += _stage_table(results) + _throughput_table(results) + _training_table(results) + _memory_lines(results)
    return "\n".join(lines) + "\n"


def _stage_table(results: dict) -> list[str]:
    lines = ["| stage | status | seconds | budget (s) | peak GPU memory, nvidia-smi (MiB) |",
             "|---|---|---:|---:|---:|"]
    for name, s in results["stages"].items():
        status = s["status"].replace("|", "/").replace("\n", " ")
        lines.append(f"| {name} | {status} | {s.get('seconds', 0):g} | {s['budget_s']:g} "
                     f"| {_num(s.get('nvidia_smi_peak_mib'))} |")
    return lines + [""]


def _throughput_table(results: dict) -> list[str]:
    rows = results["stages"].get("throughput", {}).get("measurements", [])
    if not rows:
        return ["Throughput: not run.", ""]
    lines = ["## Throughput (env steps/s, steady state)", "",
             "| num_envs | simulator alone | stridelab PPO | Brax PPO | stridelab TRPO "
             f"| PPO / simulator (goal >= {GOAL_PPO_OVER_SIMULATOR}) "
             f"| PPO / Brax PPO (goal >= {GOAL_PPO_OVER_BRAX:g}) |",
             "|---:|---:|---:|---:|---:|---|---|"]
    for g in results["goals"]:
        n = g["num_envs"]
        cells = [_cell(rows, part, n) for part in PARTS]
        ratios = [f"{_num(g[k], '{:.2f}')} {g[k + '_verdict']}" for k in ("ppo_over_simulator", "ppo_over_brax_ppo")]
        lines.append(f"| {n:,} | " + " | ".join(cells + ratios) + " |")
    return lines + ["", "Published for reference: Brax's JAX PPO on Ant about 437k steps/s on an A100, its "
                        "PyTorch notebook about 127k.", ""]


def _cell(rows: list[dict], part: str, n: int) -> str:
    m = next((r for r in rows if r["part"] == part and r["num_envs"] == n), None)
    if m is None:
        return "-"
    return _num(m["sps"]) if "sps" in m else m["status"].split(":")[0]


def _training_table(results: dict) -> list[str]:
    t = results["stages"].get("training", {})
    if not t.get("eval"):
        return [f"Training: no evaluation ({t.get('status', 'not run')}).", ""]
    stopped = " (stopped by SIGTERM at the time limit)" if t.get("stopped_at_time_limit") else ""
    lines = [f"## PPO on {results['plan']['env']}: evaluation return against time", "",
             f"`{t.get('command', '')}`{stopped}", "",
             "| env steps | wall-clock (s, training loop) | evaluation return |", "|---:|---:|---:|"]
    lines += [f"| {p['step']:,} | {_num(p['wall_clock_s'], '{:.1f}')} | {p['return']:.1f} |" for p in t["eval"]]
    return lines + [""]


def _memory_lines(results: dict) -> list[str]:
    m = results["peak_memory"]
    line = (f"Peak GPU memory: torch {_num(m['torch_mib'])} MiB, JAX {_num(m['jax_mib'])} MiB "
            f"(each the highest of one process), nvidia-smi {_num(m['nvidia_smi_mib'])} MiB (all processes).")
    return ["## Memory", "", line + (f" {m['note']}." if "note" in m else ""), ""]


# --- the orchestrator -----------------------------------------------------------------------------

def default_out(rehearsal: bool) -> Path:
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    name = f"{'rehearsal-' if rehearsal else ''}{stamp}-{socket.gethostname()}"
    return ROOT / "benchmarks" / "results" / "gpu_check" / name


def check(plan: Plan, out: Path, python: str | None = None) -> dict:
    """Every stage of ``plan`` in turn, then results.json and results.md in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(plan, out, python)
    ctx.results.update(date=datetime.datetime.now().isoformat(timespec="seconds"), host=socket.gethostname(),
                       rehearsal=plan.rehearsal, plan={k: v for k, v in plan.__dict__.items()}, stages={})
    t0 = time.monotonic()
    for name in plan.stages:
        run_stage(ctx, name)
    results = ctx.results
    results["total_seconds"] = round(time.monotonic() - t0, 1)
    results["goals"] = goals(results["stages"].get("throughput", {}).get("measurements", []), plan.sizes)
    results["peak_memory"] = peak_memory(results)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results))
    return results


def parse_budgets(items: list[str]) -> dict[str, float]:
    budgets = {}
    for item in items:
        name, _, seconds = item.partition("=")
        if name not in STAGES or not seconds:
            raise SystemExit(f"--budget {item!r}: expected STAGE=SECONDS, STAGE one of {', '.join(STAGES)}")
        budgets[name] = float(seconds)
    return budgets


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rehearsal", action="store_true", help="the same stages on the CPU at tiny sizes")
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/results/gpu_check/<date>-<host>)")
    p.add_argument("--python", help="interpreter for the stages after install (default: .venv's, after make)")
    p.add_argument("--stages", nargs="+", choices=STAGES, help="run only these (in the usual order)")
    p.add_argument("--budget", nargs="+", default=[], metavar="STAGE=SECONDS", help="a stage's time budget")
    p.add_argument("--sizes", nargs="+", type=int, help="env counts for the throughput stage")
    p.add_argument("--train-seconds", type=float, help="stop the training run this long after its start")
    args = p.parse_args(argv)
    plan = REHEARSAL_PLAN if args.rehearsal else GPU_PLAN
    plan = replace(plan, budgets={**plan.budgets, **parse_budgets(args.budget)},
                   sizes=args.sizes or plan.sizes, train_seconds=args.train_seconds or plan.train_seconds,
                   stages=tuple(s for s in STAGES if s in (args.stages or STAGES)))
    out = args.out or default_out(plan.rehearsal)
    print(f"[gpu-check] stages {', '.join(plan.stages)}; {sum(plan.budgets[s] for s in plan.stages):g} s "
          f"of budgets in all; results in {out}", flush=True)
    results = check(plan, out, args.python)
    print((out / "results.md").read_text())
    print(f"[gpu-check] wrote {out / 'results.json'} and {out / 'results.md'}")
    return 0 if all(s["status"] == "ok" for s in results["stages"].values()) else 1


# --- the children (run with the check's Python: torch, JAX and stridelab imported here) ----------

def device_peaks() -> dict[str, float | None]:
    """This process's peak GPU memory from torch's and JAX's own allocators (None without a GPU)."""
    out: dict[str, float | None] = {"torch_peak_mib": None, "jax_peak_mib": None}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        out["torch_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    jax = sys.modules.get("jax")
    if jax is not None:
        stats = [d.memory_stats() for d in jax.local_devices() if d.platform == "gpu"]
        peaks = [s["peak_bytes_in_use"] for s in stats if s and "peak_bytes_in_use" in s]
        out["jax_peak_mib"] = max(peaks) / 2**20 if peaks else None
    return out


def child_devices() -> dict:
    import jax
    import jax.numpy as jnp
    import torch

    x = jnp.arange(4.0)
    t = torch.from_dlpack(x)  # the adapter's hand-over: zero-copy when both are on one device
    return {"torch": torch.__version__, "torch_cuda_build": torch.version.cuda,
            "torch_cuda": torch.cuda.is_available(),
            "torch_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "jax": jax.__version__, "jax_backend": jax.default_backend(),
            "jax_devices": [str(d) for d in jax.devices()],
            "dlpack": {"jax_device": str(x.devices().pop()), "torch_device": str(t.device),
                       "zero_copy": t.data_ptr() == x.unsafe_buffer_pointer()}}


def child_measure(argv: list[str]) -> dict:
    """One part at one size with benchmarks/throughput.py's functions and settings."""
    p = argparse.ArgumentParser()
    for name, kind in (("--part", str), ("--num-envs", int), ("--env", str), ("--backend", str),
                       ("--seconds", float), ("--iterations", int)):
        p.add_argument(name, type=kind, required=True)
    a = p.parse_args(argv)
    from benchmarks import throughput as tp

    if a.part == "simulator":
        out = tp.simulator(a.env, a.num_envs, a.backend, a.seconds)
    elif a.part in ("stridelab-ppo", "stridelab-trpo"):
        out = tp.stridelab_training(a.part.split("-")[1], a.env, a.num_envs, a.backend, a.iterations)
    elif a.part == "brax-ppo":
        # Two of Brax's training steps (80 x num_envs env steps each with its settings there):
        # the second one's speed is measured, compilation excluded.
        # One device: the check measures one GPU (the host-device count acts on CPUs only).
        out = tp.brax_ppo(a.env, a.num_envs, a.backend, 160 * a.num_envs, devices=1)
    else:
        raise SystemExit(f"unknown part {a.part!r}")
    return {**out, **device_peaks()}


def child_train(argv: list[str]) -> dict:
    """``stridelab train ARGS`` (the CLI's own entry point), then this process's peak memory."""
    from stridelab.cli import main as stridelab_main

    rc = stridelab_main(["train", *argv])
    return {"rc": rc, **device_peaks()}


def child_read_run(run_dir: str) -> dict:
    """The run's evaluations from its TensorBoard events, each with the training loop's
    wall-clock at that step (``charts/wall_clock``, logged just before the evaluation)."""
    from stridelab.report import read_scalars

    scalars = read_scalars(Path(run_dir))
    wall = dict(scalars.get("charts/wall_clock", []))
    sps = scalars.get("charts/SPS", [])
    return {"eval": [{"step": s, "return": v, "wall_clock_s": wall.get(s)}
                     for s, v in scalars.get("eval/episodic_return", [])],
            "last_sps": sps[-1][1] if sps else None,
            "last_step": max((s for s, _ in scalars.get("charts/wall_clock", [])), default=None)}


def child_main(argv: list[str]) -> int:
    mode, rest = argv[0], argv[1:]
    handlers: dict[str, Callable[[], dict]] = {
        "devices": child_devices, "measure": lambda: child_measure(rest),
        "train": lambda: child_train(rest), "read-run": lambda: child_read_run(rest[0])}
    print(RESULT_PREFIX + json.dumps(handlers[mode]()), flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        sys.exit(child_main(sys.argv[2:]))
    sys.exit(main())
