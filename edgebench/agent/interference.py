"""How much CPU other processes used while a run was measured.

Whole-machine busy CPU time minus this process's own CPU time, over the wall time and
the number of logical CPUs: the share of the machine someone else took. Two processes
sharing two cores wreck p99 latencies, so such runs are flagged `noisy`.

The machine's counters (/proc/stat) tick at USER_HZ (100 Hz); this process's own time is
read to the nanosecond (CLOCK_PROCESS_CPUTIME_ID, every thread). The share is measured
for runs of any length; a short run's figure is only as fine as one tick per CPU, so a
run is flagged only when the share is above the threshold by more than that.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil

TICK_S = 1.0 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)


def _machine_busy_s() -> float:
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    return float(sum(times) - idle)


@dataclass(frozen=True)
class Interference:
    other_cpu_pct: float  # share of the machine's CPU capacity other processes used
    resolution_pct: float  # what one tick per CPU, at each end, amounts to over this run

    def noisy(self, threshold_pct: float) -> bool:
        return self.other_cpu_pct - self.resolution_pct > threshold_pct


@dataclass
class InterferenceMeter:
    """Start it before the measured reps and read it after."""

    _wall: float = 0.0
    _busy: float = 0.0
    _own: float = 0.0

    def start(self) -> InterferenceMeter:
        self._wall, self._busy = time.monotonic(), _machine_busy_s()
        self._own = time.process_time()
        return self

    def read(self) -> Interference:
        wall = max(time.monotonic() - self._wall, 1e-9)
        own = time.process_time() - self._own
        other = (_machine_busy_s() - self._busy) - own
        cpus = psutil.cpu_count(logical=True) or 1
        capacity = wall * cpus
        share = max(0.0, min(100.0, 100.0 * other / capacity))
        resolution = min(100.0, 100.0 * 2 * TICK_S * cpus / capacity)
        return Interference(other_cpu_pct=share, resolution_pct=resolution)
