"""The table of a grid's recorded runs: per algorithm (and switches) every seed's final return,
the IQM with its 95% bootstrap CI, the mean, the worst seed (and its share of the best), and how far its updates moved the
policy (mean KL per update, largest ratio seen).

    python benchmarks/grid_table.py benchmarks/results/grids/ablation-ant
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from stridelab.report import bootstrap_ci, iqm


def rows(folder: Path) -> list[list[str]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(folder.glob("*.json")):
        run = json.loads(path.read_text())
        label = run["algo"] + "".join(f" {k}={v}" for k, v in run["switches"].items())
        groups[(run["env"], label)].append(run)
    out = []
    for (env, label), runs in groups.items():
        runs.sort(key=lambda r: r["seed"])
        finals = np.array([r["summary"].get("eval/episodic_return", np.nan) for r in runs])
        lo, hi = bootstrap_ci(finals, iqm)
        kl = np.mean([r.get("diagnostics", {}).get("kl_mean", {}).get("mean", np.nan) for r in runs])
        ratio = np.max([r.get("diagnostics", {}).get("ratio_max", {}).get("max", np.nan) for r in runs])
        minutes = np.mean([r["summary"].get("time/wall_clock_s", np.nan) for r in runs]) / 60
        differ = differing_settings(runs)
        label += f" (settings differ between seeds: {', '.join(differ)})" if differ else ""
        share = f"{finals.min() / finals.max():.0%}" if finals.max() > 0 else "n/a"  # negative returns: no share
        out.append([env, label, ", ".join(f"{v:,.0f}" for v in finals), f"{iqm(finals):,.0f} [{lo:,.0f}, {hi:,.0f}]",
                    f"{finals.mean():,.0f}", f"{finals.min():,.0f}", share, _or_na(kl, ".4f"), _or_na(ratio, ".2f"),
                    f"{minutes:.1f}"])
    return out


# Fields that differ between the seeds of one setting by design, or do not change what is learned.
PER_RUN = {"seed", "run_dir", "progress", "device", "torch_threads", "env_shards"}


def differing_settings(runs: list[dict]) -> list[str]:
    """Config fields whose values differ between runs recorded under one name: a grid re-run
    after the presets changed pools runs that are not the same setting."""
    configs = [r["config"] for r in runs if "config" in r]
    shared = set.intersection(*(set(c) for c in configs)) - PER_RUN if configs else set()  # fields of every version
    return sorted(k for k in shared if len({json.dumps(c[k], sort_keys=True) for c in configs}) > 1)


def _or_na(value: float, spec: str) -> str:
    return "n/a" if np.isnan(value) else format(value, spec)


def main() -> None:
    header = ["task", "algorithm", "final return per seed", "IQM [95% CI]", "mean", "worst seed",
              "worst / best", "mean KL per update", "largest ratio", "minutes per run"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for folder in sys.argv[1:]:
        for row in rows(Path(folder)):
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
