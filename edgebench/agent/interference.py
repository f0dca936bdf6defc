"""How much CPU other processes used while a run was measured.

Whole-machine busy CPU time minus this process's own CPU time, over the wall time and
the number of logical CPUs: the share of the machine someone else took. Two processes
sharing two cores wreck p99 latencies, so such runs are flagged `noisy`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psutil

DEFAULT_NOISY_PCT = 10.0
# CPU times tick at 100 Hz: below a second of wall time the share is too coarse to judge.
MIN_WALL_S = 1.0


def _machine_busy_s() -> float:
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    return float(sum(times) - idle)


def _own_cpu_s() -> float:
    own = psutil.Process().cpu_times()
    return float(own.user + own.system)


@dataclass
class InterferenceMeter:
    """Start it before the measured reps and read it after."""

    _wall: float = 0.0
    _busy: float = 0.0
    _own: float = 0.0

    def start(self) -> InterferenceMeter:
        self._wall, self._busy, self._own = time.monotonic(), _machine_busy_s(), _own_cpu_s()
        return self

    def other_cpu_pct(self) -> float | None:
        """Percent of the machine's CPU capacity used by other processes since start, or
        None when the window was too short to tell."""
        wall = time.monotonic() - self._wall
        if wall < MIN_WALL_S:
            return None
        other = (_machine_busy_s() - self._busy) - (_own_cpu_s() - self._own)
        capacity = wall * (psutil.cpu_count(logical=True) or 1)
        return max(0.0, min(100.0, 100.0 * other / capacity))
