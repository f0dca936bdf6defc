"""Interference is measured for runs of any length: a short run that another process
disturbs is marked noisy; the sampling rates travel with every result."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from edgebench.agent.interference import InterferenceMeter
from edgebench.agent.runner import run_benchmark
from edgebench.agent.sensors import Roots
from edgebench.workload import RunSpec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SPIN = "import time\nend = time.monotonic() + 5\nwhile time.monotonic() < end: pass"


def test_a_short_window_shared_with_a_busy_process_is_noisy() -> None:
    hogs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(2)]
    try:
        time.sleep(0.3)  # the hogs are running
        meter = InterferenceMeter().start()
        time.sleep(0.25)  # well under the second the old meter needed
        seen = meter.read()
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert seen.other_cpu_pct > 60  # two spinning processes on this machine's CPUs
    assert seen.resolution_pct < 40 and seen.noisy(10.0)


def test_a_quiet_window_is_not_noisy_for_its_own_work() -> None:
    meter = InterferenceMeter().start()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:  # this process's own work is never someone else's
        pass
    seen = meter.read()
    # counting our own spin as someone else's would read about 100 / CPUs percent
    assert seen.other_cpu_pct < seen.resolution_pct + 25


def test_every_result_carries_the_sampling_rates(tiny_model: Path, tmp_path: Path) -> None:
    spec = RunSpec.of(n_prompt=(8,), n_gen=(4,), reps=1, warmup=0, sample_hz=20.0)
    roots = Roots(
        sysfs=FIXTURES / "raspberrypi5" / "sys", path=str(FIXTURES / "raspberrypi5" / "bin")
    )
    [result] = run_benchmark(tiny_model, spec, cache_dir=tmp_path, roots=roots)
    assert result.other_cpu_pct is not None  # measured, however short the run
    assert result.sensors["sample_hz"] == 20.0
    intervals = result.sensors["source_interval_s"]
    assert intervals.get("raspberrypi") == 0.5 and all(v > 0 for v in intervals.values())
