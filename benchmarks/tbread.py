"""Print the scalars of a run's TensorBoard events: ``python benchmarks/tbread.py RUN_DIR [TAG ...]``."""

from __future__ import annotations

import sys
from pathlib import Path

from stridelab.report import read_scalars as _read_all


def read_scalars(run_dir: str, tags: list[str] | None = None) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` from every event file under ``run_dir`` (resumes merged)."""
    scalars = _read_all(Path(run_dir))
    return {k: v for k, v in scalars.items() if not tags or k in tags}


if __name__ == "__main__":
    run, *tags = sys.argv[1:]
    for tag, series in read_scalars(run, tags or ["charts/episodic_return", "charts/SPS"]).items():
        print(tag)
        for step, value in series[:: max(1, len(series) // 25)] + series[-1:]:
            print(f"  {step:>10,d}  {value:10.2f}")
