"""How many of this process's cores are free of other work: torch's thread count for the update.

torch's CPU thread pool assumes it has every core to itself. When another program keeps a core
busy (even at nice 19), each parallel kernel waits at its barrier for the thread that shares
that core, and an update made of thousands of small kernels slowed 13 x where the simulator
slowed 1.4 x (issue 21). :class:`CoreMeter` reads, between two calls, how much CPU time the
other processes took on this process's cores (``/proc/stat``, less this process's own time), so
the update can run on the cores they leave idle.

Programs at a lower priority than this one do not count: the scheduler gives a nice-0 thread
about 68 times the share of a nice-19 one, so a low-priority busy loop hardly delays torch's
kernels (measured: the update 0.98-1.18 x its quiet time on all threads beside one, while one
thread fewer cost 1.6-1.7 x). ``/proc/stat`` keeps niced processes' user time apart ("nice").
"""

from __future__ import annotations

import os
import sys
import time

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def affinity() -> list[int]:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def busy_ticks(stat: str, cpus: list[int], count_niced: bool) -> int:
    """Clock ticks ``/proc/stat``'s text says were spent on ``cpus``, not idle; the user time of
    niced processes only with ``count_niced`` (they yield to a process that is not niced)."""
    wanted, busy = {f"cpu{c}" for c in cpus}, 0
    for line in stat.splitlines():
        name, *fields = line.split()
        if name in wanted:
            # user nice system idle iowait irq softirq steal (guest time is counted in user already)
            ticks = [int(x) for x in fields[:8]] + [0] * max(0, 8 - len(fields))
            busy += sum(ticks) - ticks[3] - ticks[4] - (0 if count_niced else ticks[1])
    return busy


def _busy_seconds(cpus: list[int], count_niced: bool) -> float | None:
    """CPU seconds spent on ``cpus`` so far by programs of this one's priority or higher (all of
    them when this one is itself niced); None without ``/proc/stat``."""
    try:
        with open("/proc/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return busy_ticks(stat, cpus, count_niced) / _TICKS


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


class CoreMeter:
    """Counts the cores other processes kept busy since the last reading."""

    def __init__(self) -> None:
        self.cpus = affinity()
        self._count_niced = hasattr(os, "nice") and os.nice(0) > 0  # a run's priority does not change
        self._last = self._read()

    def _read(self) -> tuple[float, float | None, float]:
        return time.perf_counter(), _busy_seconds(self.cpus, self._count_niced), _own_seconds()

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


def pin_from_env() -> None:
    """``STRIDELAB_CPUS=0,1`` pins this process to those cores, before JAX and torch start their
    thread pools (``compare`` and benchmarks/grid.py run one training per core this way)."""
    cpus = os.environ.get("STRIDELAB_CPUS")
    if cpus and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
        except (ValueError, OSError) as e:
            print(f"stridelab: ignoring STRIDELAB_CPUS={cpus!r} ({e})", file=sys.stderr)
