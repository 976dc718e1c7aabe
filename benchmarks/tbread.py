"""Print the scalars of a run's TensorBoard events: ``python benchmarks/tbread.py RUN_DIR [TAG ...]``."""

from __future__ import annotations

import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def read_scalars(run_dir: str, tags: list[str] | None = None) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(Path(run_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            if tags and tag not in tags:
                continue
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return {k: sorted(v) for k, v in out.items()}


if __name__ == "__main__":
    run, *tags = sys.argv[1:]
    for tag, series in read_scalars(run, tags or ["charts/episodic_return", "charts/SPS"]).items():
        print(tag)
        for step, value in series[:: max(1, len(series) // 25)] + series[-1:]:
            print(f"  {step:>10,d}  {value:10.2f}")
