"""The metrics of the first iterations of fixed-seed runs, to check that a refactoring keeps behaviour.

    python benchmarks/fingerprint.py --out benchmarks/results/fingerprint_before.json
    python benchmarks/fingerprint.py --compare benchmarks/results/fingerprint_before.json

Trains PPO and TRPO for a few iterations on Brax Ant and on Hopper-v5 (seed 1, small batches)
through the command line, and records every scalar TensorBoard got, except the clocks. With
``--compare`` it prints the largest relative difference per run against a recorded file.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

# The Brax runs keep their batch on one XLA device (--env-shards 1): split over several, the
# policy's forward pass inside the rollout multiplies smaller matrices, whose float rounding
# differs in the last bits (docs/architecture.md), and a fingerprint compares to the bit.
RUNS = {
    "ant_ppo": ["--algo", "ppo", "--env", "ant", "--num-envs", "256", "--num-steps", "16",
                "--total-steps", str(256 * 16 * 3), "--episode-length", "40", "--env-shards", "1"],
    "ant_trpo": ["--algo", "trpo", "--env", "ant", "--num-envs", "256", "--num-steps", "16",
                 "--total-steps", str(256 * 16 * 3), "--episode-length", "40", "--env-shards", "1"],
    "hopper_ppo": ["--algo", "ppo", "--env", "Hopper-v5", "--total-steps", str(2048 * 3)],
    "hopper_trpo": ["--algo", "trpo", "--env", "Hopper-v5", "--total-steps", str(2048 * 3)],
}
# Wall-clock readings differ between any two runs.
CLOCKS = ("charts/SPS", "charts/rollout_seconds", "charts/batch_seconds", "charts/update_seconds",
          "charts/update_fraction", "charts/wall_clock", "time/")


def run_one(name: str, flags: list[str], root: Path) -> dict[str, list[tuple[int, float]]]:
    run_dir = root / name
    import torch

    # torch's own thread count throughout, as before issue 21: with --torch-threads auto the
    # count follows the machine's load, and a reduction split over fewer threads rounds otherwise.
    cmd = [sys.executable, "-m", "stridelab", "train", *flags, "--seed", "1", "--eval-episodes", "4",
           "--eval-every", "0", "--no-progress", "--run-dir", str(run_dir), "--torch-threads", str(torch.get_num_threads())]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    from stridelab.report import read_scalars

    return {tag: [(int(s), float(v)) for s, v in series]
            for tag, series in sorted(read_scalars(run_dir).items()) if not tag.startswith(CLOCKS)}


def largest_difference(a: dict, b: dict) -> tuple[float, str]:
    """The largest relative difference over the recorded tags ``a`` at their recorded steps
    (new tags in ``b`` are metrics added since, and new steps points added since, such as the
    evaluation at step 0: neither is compared)."""
    worst, where = 0.0, ""
    for tag in sorted(a):
        if tag not in b:
            return math.inf, f"{tag} no longer logged"
        now = dict((int(s), v) for s, v in b[tag])
        for sa, va in a[tag]:
            if int(sa) not in now:
                return math.inf, f"{tag} has no point at step {sa} any more"
            vb = now[int(sa)]
            rel = abs(va - vb) / max(abs(va), abs(vb), 1e-12)
            if rel > worst:
                worst, where = rel, f"{tag} at step {sa}: {va:.8g} vs {vb:.8g}"
    return worst, where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the metrics to this JSON file")
    parser.add_argument("--compare", type=Path, help="compare with a recorded JSON file")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = {name: run_one(name, RUNS[name], Path(tmp)) for name in args.runs}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.compare:
        recorded = json.loads(args.compare.read_text())
        for name in args.runs:
            worst, where = largest_difference(recorded[name], result[name])
            added = sorted(set(result[name]) - set(recorded[name]))
            print(f"{name:<12} largest relative difference {worst:.2e}  ({where})"
                  + (f"; new metrics: {', '.join(added)}" if added else ""))


if __name__ == "__main__":
    main()
