"""The sampler: a thread that reads every detected sensor source at a set rate, stamped
with the same clock as the token timings (perf_counter_ns). What its samples mean (energy
per phase, temperatures, clocks, throttle events) is edgebench/measure/energy.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from edgebench.agent.sensors import Source
from edgebench.measure.readings import Sample


class Sampler:
    """Reads each source no more often than its own interval (vcgencmd is slow)."""

    def __init__(self, sources: Sequence[Source], hz: float = 10.0) -> None:
        if hz <= 0:
            raise ValueError("the sampling rate must be positive")
        self.sources = list(sources)
        self.hz = hz
        self.period_ns = int(1e9 / hz)
        self.samples: list[Sample] = []
        self._due = [0] * len(self.sources)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        if self.sources and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for source in self.sources:  # sources that run a tool process end it here
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def sample_now(self) -> None:
        """Reads every source at once (window boundaries), whatever their interval."""
        self._read(force=True)

    def _loop(self) -> None:
        next_ns = time.perf_counter_ns()
        while not self._stop.is_set():
            self._read(force=False)
            next_ns += self.period_ns
            delay = (next_ns - time.perf_counter_ns()) / 1e9
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_ns = time.perf_counter_ns()  # fell behind: do not burst to catch up

    def _read(self, force: bool) -> None:
        with self._lock:  # sources keep counter state; one reader at a time
            for index, source in enumerate(self.sources):
                now = time.perf_counter_ns()
                if not force and now < self._due[index]:
                    continue
                self._due[index] = now + int(source.interval_s * 1e9)
                readings = source.read()
                stamp = time.perf_counter_ns()
                self.samples.extend(Sample(stamp, r) for r in readings if r.status == "ok")

    def snapshot(self) -> list[Sample]:
        with self._lock:
            return list(self.samples)
