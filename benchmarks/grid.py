"""A resumable grid of training runs whose small summaries live in the repository.

    python benchmarks/grid.py --name ablation-hopper --env Hopper-v5 --algos ppo ppo-m trpo trpo+ \\
        --seeds 1 2 3 4 5 --total-steps 1000000 --commit
    python benchmarks/grid.py --name std-sweep --env Hopper-v5 --algos ppo --seeds 1 2 3 \\
        --vary state_dependent_std=true,false init_std=0.3,0.69 --commit

Every run is ``stridelab train`` (one per core, pinned, at low priority even against other
terminals' programs: ``low_priority_session``; Ctrl-C stops each at a checkpoint), its run directory under
``--runs`` (default ``runs/grids/NAME``). When a run ends, its summary, config and evaluation
curve are written to ``benchmarks/results/grids/NAME/<run>.json`` and, with ``--commit``,
committed on their own. Started again, here or on another machine with the repository, the grid
skips every run whose JSON is there and resumes the ones whose run directory holds a checkpoint;
a second invocation of the same grid skips the runs the first is training and takes the others.
``--adopt OTHER_RESULTS`` copies in another grid's recorded runs whose config equals the one a
run here would train with (after a preset moved to a value a screening grid already ran).
Other ``stridelab train`` flags given after the grid's own go to every run. The algorithms
``sb3-ppo`` and ``sb3-trpo`` are the peers (Stable-Baselines3's PPO, sb3-contrib's TRPO, with
``benchmarks/sb3_baselines.py``'s settings; ``pip install -e '.[bench]'``), recorded alike. On a Ray cluster,
``--launcher ray --ray-address HEAD:6379`` runs the grid as Ray tasks instead (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TextIO

ROOT = Path(__file__).resolve().parents[1]
# The peers as grid algorithms: Stable-Baselines3's PPO and sb3-contrib's TRPO (sb3_baselines.py).
PEERS = {"sb3-ppo": "ppo", "sb3-trpo": "trpo"}
PEER_RESULT = "result.json"
POLL_S = 0.25  # how often the grid looks for ended runs: a free core waits at most this long for the next


def combos(vary: list[str]) -> list[dict[str, str]]:
    """``["a=1,2", "b=x"]`` -> ``[{"a": "1", "b": "x"}, {"a": "2", "b": "x"}]``."""
    axes = []
    for item in vary:
        key, _, values = item.partition("=")
        if not key or not values:
            raise SystemExit(f"--vary {item!r}: write NAME=VALUE[,VALUE...], e.g. init_std=0.3,0.69")
        axes.append([(key, v) for v in values.split(",")])
    return [dict(c) for c in itertools.product(*axes)] if axes else [{}]


def run_name(env: str, algo: str, seed: int, switches: dict[str, str]) -> str:
    tail = "".join(f"_{k}={v}" for k, v in switches.items())
    return f"{env}_{algo}{tail}_s{seed}"


def flags(switches: dict[str, str]) -> list[str]:
    """Switches as ``stridelab train`` flags: booleans as ``--x`` / ``--no-x``."""
    out = []
    for key, value in switches.items():
        flag = "--" + key.replace("_", "-")
        if value.lower() in ("true", "false"):
            out.append(flag if value.lower() == "true" else "--no-" + key.replace("_", "-"))
        else:
            out += [flag, *value.split()]
    return out


def plan(args: argparse.Namespace) -> list[dict]:
    """Every run of the grid that has no summary in the repository yet, seed by seed (an
    interrupted grid then holds every setting at its first seeds, not some settings at all)."""
    todo = []
    for seed, env, algo, switches in itertools.product(args.seeds, args.env, args.algos, combos(args.vary)):
        name = run_name(env, algo, seed, switches)
        if not (args.results / f"{name}.json").is_file():
            todo.append({"name": name, "env": env, "algo": algo, "seed": seed, "switches": switches})
    return todo


def claim(run: dict, args: argparse.Namespace) -> TextIO | None:
    """An exclusive lock on the run for as long as this grid lives, or None when another grid
    (on this machine, or on a filesystem shared with it) holds it or has recorded the run since:
    two invocations of one grid then share its runs instead of both training one."""
    args.runs.mkdir(parents=True, exist_ok=True)
    lock = open(args.runs / f".{run['name']}.claim", "a")  # noqa: SIM115 - held until the grid exits
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        print(f"[grid] skipping {run['name']}: another grid is running it", flush=True)
        return None
    if (args.results / f"{run['name']}.json").is_file():
        lock.close()
        return None
    return lock


def command(run: dict, args: argparse.Namespace) -> list[str]:
    run_dir = args.runs / run["name"]
    if run["algo"] in PEERS:  # no checkpoints: an interrupted peer starts over
        return [sys.executable, str(ROOT / "benchmarks" / "sb3_baselines.py"), "--env", run["env"],
                "--algo", PEERS[run["algo"]], "--seed", str(run["seed"]), "--steps", str(args.total_steps),
                "--out", str(run_dir / PEER_RESULT)]
    if any((run_dir / "checkpoints").glob("*.ckpt")):  # train falls back to the newest intact one
        return [sys.executable, "-m", "stridelab", "train", "--resume", str(run_dir), "--no-progress"]
    # A run stopped before its first checkpoint left a directory that a fresh run must replace.
    fresh = ["--overwrite"] if run_dir.is_dir() and any(run_dir.iterdir()) else []
    return [sys.executable, "-m", "stridelab", "train", *fresh, *train_flags(run, args)]


def train_flags(run: dict, args: argparse.Namespace) -> list[str]:
    """The ``stridelab train`` flags of a fresh run."""
    return ["--algo", run["algo"], "--env", run["env"], "--seed", str(run["seed"]), "--total-steps",
            str(args.total_steps), "--run-dir", str(args.runs / run["name"]), "--no-progress",
            *flags(run["switches"]), *args.extra]


def adopt(todo: list[dict], args: argparse.Namespace) -> list[dict]:
    """Copy in the runs that a grid of ``--adopt`` trained with the very config a run of this
    grid would get (say a screening grid's, once its setting became the preset), each copy
    naming its source in ``copied_from``; the runs left to train."""
    left = []
    for run in todo:
        same = _same_run(run, args)
        if same is None:
            left.append(run)
            continue
        source = f"{same.parent.name}/{same.stem}"
        print(f"[grid] {run['name']}: {'would adopt' if args.dry_run else 'adopting'} {source} (the same config)",
              flush=True)
        if not args.dry_run:
            data = {**json.loads(same.read_text()), "name": run["name"], "switches": run["switches"],
                    "copied_from": f"{source}: the same config"}
            _write(args.results / f"{run['name']}.json", data, args, f"grid {args.name}: {run['name']} adopted from {source}")
    return left


def _same_run(run: dict, args: argparse.Namespace) -> Path | None:
    """A recorded run of an ``--adopt`` grid on this task and seed whose config, where the run
    lived aside, equals the one this run would train with (peers record no config: never)."""
    from stridelab.api import train_config
    from stridelab.cli import settings_from_flags

    if run["algo"] in PEERS:
        return None
    mine = _comparable(train_config(settings_from_flags(train_flags(run, args))).to_dict())
    for path in (p for folder in args.adopt for p in sorted(folder.glob(f"{run['env']}_*_s{run['seed']}.json"))):
        if _comparable(json.loads(path.read_text()).get("config", {})) == mine:
            return path
    return None


def _comparable(config: dict) -> dict:
    """A config without what names where the run lived."""
    return {k: v for k, v in config.items() if k != "run_dir"}


def start(run: dict, args: argparse.Namespace, cores: tuple[int, ...], lock: TextIO) -> subprocess.Popen:
    log = open(args.runs / f".{run['name']}.log", "a")  # noqa: SIM115 - closed when the run ends
    env = {**os.environ, "STRIDELAB_CPUS": ",".join(map(str, cores)), "OMP_NUM_THREADS": str(len(cores))}
    print(f"[grid] {'resuming' if '--resume' in command(run, args) else 'training'} {run['name']}", flush=True)
    proc = subprocess.Popen(["nice", "-n", str(args.nice), *command(run, args)], stdout=log, stderr=log, env=env,
                            start_new_session=True, preexec_fn=low_priority_session(args.nice))
    proc.log, proc.run, proc.cores, proc.claim = log, run, cores, lock  # type: ignore[attr-defined]
    return proc


def low_priority_session(nice: int) -> Callable[[], None]:
    """Run in the child between fork and exec, in the session of its own that Popen gave it.

    Where the kernel groups processes by session for scheduling (Linux's autogroups, on by
    default on most desktops), a process's nice value weighs only against its own session's
    processes: a grid started from one terminal took half the cores from a test run started from
    another, nice 19 or not (the test suite, started in another session beside two nice-19 SB3
    runs and a few minutes of other tests, took 24.8 minutes against 13.8 on a quiet machine).
    Niced as a session too, the runs take what other sessions leave. The child also stops with
    the grid (compare.die_with_parent), since a session of its own no longer gets the
    terminal's Ctrl-C; the grid passes that on itself (run_local)."""
    from stridelab.compare import die_with_parent

    die = die_with_parent(os.getpid()) if sys.platform == "linux" else (lambda: None)

    def child() -> None:
        die()
        try:
            with open("/proc/self/autogroup", "w") as group:
                group.write(str(nice))
        except OSError:
            pass  # no autogroups here: the process's own nice is all the scheduler weighs

    return child


def record(run: dict, args: argparse.Namespace) -> Path:
    """The run's summary, config and evaluation curve as one small JSON in the repository."""
    run_dir = args.runs / run["name"]
    data = _peer_record(run, run_dir) if run["algo"] in PEERS else _stridelab_record(run, run_dir)
    path = args.results / f"{run['name']}.json"
    return _write(path, data, args, f"grid {args.name}: {run['name']} (eval return {data['summary'].get('eval/episodic_return', float('nan')):.0f})")


def _write(path: Path, data: dict, args: argparse.Namespace, message: str) -> Path:
    """One run's JSON, whole or not at all, and committed on its own with ``--commit``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
    if args.commit:
        _commit(path, message)
    return path


def _stridelab_record(run: dict, run_dir: Path) -> dict:
    from stridelab.report import read_scalars

    scalars = read_scalars(run_dir)
    curve = scalars.get("eval/episodic_return", [])
    # How far the updates moved the policy: each diagnostic's mean over training, and its largest value.
    moves = {tag.split("/", 1)[1]: {"mean": sum(v for _, v in series) / len(series), "max": max(v for _, v in series)}
             for tag, series in scalars.items() if tag.startswith("diagnostics/") and series}
    return {**run, "summary": json.loads((run_dir / "summary.json").read_text()),
            "config": json.loads((run_dir / "config.json").read_text()),
            "eval_curve": [[int(s), float(v)] for s, v in curve], "diagnostics": moves,
            "eval_curves": _eval_curves(scalars)}


def _eval_curves(scalars: dict[str, list[tuple[int, float]]]) -> dict[str, list[list[float]]]:
    """Every other ``eval/`` series (a velocity task's tracking errors and falls), and the
    wall-clock seconds when each evaluation's step was reached (``charts/wall_clock``)."""
    curves = {tag.split("/", 1)[1]: [[int(s), float(v)] for s, v in series] for tag, series in scalars.items()
              if tag.startswith("eval/") and tag != "eval/episodic_return"}
    clock = scalars.get("charts/wall_clock", [])
    if clock and scalars.get("eval/episodic_return"):
        steps = [int(s) for s, _ in scalars["eval/episodic_return"]]
        curves["wall_clock_s"] = [[step, next((float(v) for s, v in clock if s >= step), float(clock[-1][1]))]
                                  for step in steps]
    return curves


def _peer_record(run: dict, run_dir: Path) -> dict:
    """A peer's result under the summary names stridelab's runs use, so one table reads both."""
    peer = json.loads((run_dir / PEER_RESULT).read_text())
    summary = {"global_step": peer["steps"], "eval/episodic_return": peer["eval_mean"],
               "eval/episodic_return_std": peer["eval_std"], "charts/SPS": peer["sps"],
               "time/wall_clock_s": peer["train_seconds"]}
    return {**run, "summary": summary, "peer": peer, "eval_curve": []}


def _commit(path: Path, message: str) -> None:
    for _ in range(5):  # another commit may hold the index for a moment
        add = subprocess.run(["git", "-C", str(ROOT), "add", str(path)], capture_output=True)
        done = subprocess.run(["git", "-C", str(ROOT), "commit", "-q", "-m", message, "--", str(path)],
                              capture_output=True)
        if add.returncode == 0 and done.returncode == 0:
            return
        time.sleep(2)
    print(f"[grid] could not commit {path}: {done.stderr.decode().strip()}", file=sys.stderr)


def run_local(todo: list[dict], args: argparse.Namespace) -> int:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    jobs = max(1, min(args.jobs or len(cpus), len(cpus)))
    free = [tuple(cpus[i::jobs]) for i in range(jobs)]
    running: list[subprocess.Popen] = []
    failed = 0
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops the runs as Ctrl-C does
    try:
        while todo or running:
            while todo and free:
                run = todo.pop(0)
                if (lock := claim(run, args)) is not None:
                    running.append(start(run, args, free.pop(0), lock))
            time.sleep(POLL_S)
            for proc in [p for p in running if p.poll() is not None]:
                running.remove(proc)
                proc.log.close()  # type: ignore[attr-defined]
                free.append(proc.cores)  # type: ignore[attr-defined]
                failed += not finished(proc.run, proc.returncode, args)  # type: ignore[attr-defined]
                proc.claim.close()  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        stop(running)
        raise SystemExit("[grid] interrupted: every run stopped at a checkpoint; run the same command again to go on")
    return failed


def stop(running: list[subprocess.Popen]) -> None:
    """Ctrl-C or SIGTERM, passed on as one SIGINT to each run (in sessions of their own, they do
    not get the terminal's): a stridelab run writes a checkpoint and stops, a peer's run starts
    over. A run still there after two minutes is killed."""
    for proc in running:
        proc.send_signal(signal.SIGINT)
    for proc in running:
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()


def finished(run: dict, code: int, args: argparse.Namespace) -> bool:
    """Record a run that ended well (True), or say where the log of one that failed is."""
    if code == 0:
        print(f"[grid] {run['name']} done: {record(run, args)}", flush=True)
        return True
    print(f"[grid] {run['name']} failed (exit {code}); log in {args.runs}", flush=True)
    return False


def run_ray(todo: list[dict], args: argparse.Namespace) -> int:
    """The same runs as Ray tasks on a cluster (``--ray-address``) or a local one: Ray places
    them, and each is recorded as it ends. The run directories must be on a filesystem every
    node shares, with the same Python environment on each."""
    from stridelab.compare import run_on_ray

    claims = [claim(run, args) for run in todo]  # held until the grid exits
    todo = [run for run, lock in zip(todo, claims) if lock is not None]
    if not todo:
        return 0
    jobs = [(["nice", "-n", str(args.nice), *command(run, args)], args.runs / f".{run['name']}.log") for run in todo]
    for run, (cmd, _) in zip(todo, jobs):
        print(f"[grid] {'resuming' if '--resume' in cmd else 'training'} {run['name']} (Ray task)", flush=True)
    ok = []
    run_on_ray(jobs, lambda i, code: ok.append(finished(todo[i], code, args)), args.ray_address,
               args.ray_cpus_per_run, args.ray_gpus_per_run)
    return ok.count(False)


def check_launcher(args: argparse.Namespace) -> None:
    """compare's launcher checks, as one line each."""
    from stridelab.compare import check_launcher as check
    from stridelab.errors import ConfigError

    try:
        check(args.launcher, args.ray_address, args.ray_cpus_per_run, args.ray_gpus_per_run)
    except ConfigError as e:
        raise SystemExit(f"grid.py: {e}") from None
    if args.launcher == "ray" and args.jobs:
        raise SystemExit(f"--jobs {args.jobs}: with --launcher ray, Ray places the runs (see --ray-cpus-per-run)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--name", required=True, help="the grid's name (folder of its results)")
    p.add_argument("--env", nargs="+", required=True)
    p.add_argument("--algos", nargs="+", required=True)
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--total-steps", type=int, required=True)
    p.add_argument("--vary", nargs="*", default=[], help="NAME=V1,V2 ...: config fields to grid over")
    p.add_argument("--jobs", type=int, default=None, help="runs at once (default: one per core)")
    p.add_argument("--nice", type=int, default=19, help="priority of the runs (default 19: beside other work)")
    p.add_argument("--commit", action="store_true", help="git-commit each run's JSON as it finishes")
    p.add_argument("--runs", type=Path, default=None, help="run directories (default runs/grids/NAME)")
    p.add_argument("--results", type=Path, default=None,
                   help="where the runs' JSONs go (default benchmarks/results/grids/NAME)")
    p.add_argument("--adopt", type=Path, nargs="+", default=[], metavar="RESULTS",
                   help="other grids' result folders: copy in their runs whose config equals this grid's run")
    p.add_argument("--dry-run", action="store_true", help="list the runs still to do and stop")
    p.add_argument("--launcher", choices=["local", "ray"], default="local",
                   help="local: one run per core here; ray: Ray tasks, on the cluster at --ray-address")
    p.add_argument("--ray-address", default=None, help="a running Ray cluster (default: start one on this machine)")
    p.add_argument("--ray-cpus-per-run", type=float, default=1.0)
    p.add_argument("--ray-gpus-per-run", type=float, default=0.0)
    args, args.extra = p.parse_known_args()
    check_launcher(args)
    args.runs = (args.runs or ROOT / "runs" / "grids" / args.name).resolve()
    args.results = (args.results or ROOT / "benchmarks" / "results" / "grids" / args.name).resolve()
    peers = sorted(set(args.algos) & set(PEERS))
    if peers and (args.vary or args.extra):
        raise SystemExit(f"--algos {' '.join(peers)}: the peers run with their own settings (sb3_baselines.py); "
                         f"give them no --vary or train flags (got {' '.join(args.vary + args.extra)})")
    missing = [str(folder) for folder in args.adopt if not folder.is_dir()]
    if missing:
        raise SystemExit(f"--adopt {' '.join(missing)}: not a folder of a grid's results")
    todo = adopt(plan(args), args) if args.adopt else plan(args)
    print(f"[grid] {args.name}: {len(todo)} runs to do", flush=True)
    if args.dry_run:
        for run in todo:
            print("  " + " ".join(command(run, args)))
        return
    sys.exit(1 if (run_ray if args.launcher == "ray" else run_local)(todo, args) else 0)


if __name__ == "__main__":
    main()
