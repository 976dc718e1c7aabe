"""Markdown tables for docs/results.md from `stridelab compare` directories and the SB3 runs.

    python benchmarks/results_table.py runs/results/Hopper-v5 runs/results/HalfCheetah-v5 \\
        --sb3 benchmarks/results/sb3_*.json

For each task: every run's final deterministic evaluation return (16 episodes), the mean over
seeds, env steps per second and wall-clock per run; then the peers on the same task and budget.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def compare_rows(out: Path) -> list[dict]:
    rows = []
    for run in sorted(p for p in out.iterdir() if (p / "summary.json").is_file()):
        summary = json.loads((run / "summary.json").read_text())
        config = json.loads((run / "config.json").read_text())
        rows.append({"algo": config["algo"], "seed": config["seed"], "env": config["env"],
                     "return": summary["eval/episodic_return"], "sps": summary["charts/SPS"],
                     "wall": summary["time/wall_clock_s"], "steps": summary["global_step"]})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dirs", nargs="+", type=Path)
    p.add_argument("--sb3", nargs="*", type=Path, default=[])
    args = p.parse_args()
    peers = [json.loads(f.read_text()) for f in args.sb3]
    for out in args.dirs:
        rows = compare_rows(out)
        if not rows:
            continue
        env = rows[0]["env"]
        print(f"\n### {env}\n")
        print("| library | algorithm | final return per seed | mean | env steps/s | wall-clock per run |")
        print("|---|---|---|---|---|---|")
        for algo in sorted({r["algo"] for r in rows}):
            mine = [r for r in rows if r["algo"] == algo]
            returns = ", ".join(f"{r['return']:,.0f}" for r in mine)
            print(f"| stridelab | {algo.upper()} | {returns} | **{np.mean([r['return'] for r in mine]):,.0f}** | "
                  f"{np.mean([r['sps'] for r in mine]):,.0f} | {np.mean([r['wall'] for r in mine]) / 60:.1f} min |")
        for peer in (q for q in peers if q["env"] == env):
            print(f"| {peer['library']} | {peer['algo'].upper()} | {peer['eval_mean']:,.0f} (seed {peer['seed']}) | "
                  f"{peer['eval_mean']:,.0f} | {peer['sps']:,.0f} | {peer['train_seconds'] / 60:.1f} min |")


if __name__ == "__main__":
    main()
