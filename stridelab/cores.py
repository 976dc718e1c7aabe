"""How many of this process's cores are free of other work: torch's thread count for the update.

torch's CPU thread pool assumes it has every core to itself. When another program keeps a core
busy (even at nice 19), each parallel kernel waits at its barrier for the thread that shares
that core, and an update made of thousands of small kernels slowed 13 x where the simulator
slowed 1.4 x (issue 21). :class:`CoreMeter` reads, between two calls, how much CPU time the
other processes took on this process's cores (``/proc/stat``, less this process's own time), so
the update can run on the cores they leave idle.
"""

from __future__ import annotations

import os
import time

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def affinity() -> list[int]:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _busy_seconds(cpus: list[int]) -> float | None:
    """CPU seconds spent on ``cpus`` so far (every process, nice ones too); None without ``/proc/stat``."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    wanted, busy = {f"cpu{c}" for c in cpus}, 0
    for line in lines:
        name, *fields = line.split()
        if name in wanted:
            # user nice system idle iowait irq softirq steal (guest time is counted in user already)
            ticks = [int(x) for x in fields[:8]]
            busy += sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)
    return busy / _TICKS


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


class CoreMeter:
    """Counts the cores other processes kept busy since the last reading."""

    def __init__(self) -> None:
        self.cpus = affinity()
        self._last = self._read()

    def _read(self) -> tuple[float, float | None, float]:
        return time.perf_counter(), _busy_seconds(self.cpus), _own_seconds()

    def others_busy(self) -> float:
        """Cores' worth of CPU time other processes took since the last call (0 where unknown)."""
        now = self._read()
        (t0, busy0, own0), (t1, busy1, own1) = self._last, now
        self._last = now
        if busy0 is None or busy1 is None or t1 - t0 < 0.05:
            return 0.0
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / (t1 - t0))

    def idle_cores(self) -> int:
        """This process's cores less those others kept busy (rounded, at least one)."""
        return max(1, len(self.cpus) - round(self.others_busy()))
