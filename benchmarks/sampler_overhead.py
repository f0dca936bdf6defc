"""CPU cost of the sensor sampler at 10 Hz, as a share of one core.

Runs the real sampler against fixture trees of real devices for a set time and reads the
CPU time of its thread (and of the platform tools it starts: the Pi's vcgencmd) from the
kernel. Target: under 1% of one core at 10 Hz.

Usage: .venv/bin/python -m benchmarks.sampler_overhead [--seconds 10] [--hz 10] [--host]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import psutil

from edgebench.agent.sampler import Sampler
from edgebench.agent.sensors import Roots, detect_sources

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def thread_cpu_s(native_id: int) -> float:
    for thread in psutil.Process().threads():
        if thread.id == native_id:
            return float(thread.user_time + thread.system_time)
    return 0.0


def fixture_roots(device: str) -> Roots:
    tools = FIXTURES / device / "bin"
    return Roots(sysfs=FIXTURES / device / "sys", path=f"{tools}:/usr/bin:/bin")


def measure(roots: Roots, seconds: float, hz: float) -> tuple[float, int, int]:
    sampler = Sampler(detect_sources(roots), hz=hz)
    if not sampler.sources:
        return 0.0, 0, 0  # nothing to read: the sampler starts no thread
    children_before = os.times().children_user + os.times().children_system
    sampler.start()
    assert sampler._thread is not None and sampler._thread.native_id is not None
    time.sleep(seconds)
    own = thread_cpu_s(sampler._thread.native_id)
    sampler.stop()
    children = os.times().children_user + os.times().children_system - children_before
    return 100.0 * (own + children) / seconds, len(sampler.samples), len(sampler.sources)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--hz", type=float, default=10.0)
    parser.add_argument(
        "--host",
        action="store_true",
        help="also measure this machine's own sensors (NVML on a GPU machine)",
    )
    args = parser.parse_args()
    print(f"{args.hz:g} Hz for {args.seconds:g} s per device\n")
    print("| device fixture | sources | readings taken | CPU, % of one core | target |")
    print("|---|---|---|---|---|")
    targets = [(d, fixture_roots(d)) for d in ("intel_desktop", "jetson_orin_jp6", "raspberrypi5")]
    if args.host:
        targets.append(
            ("this machine: " + ",".join(s.name for s in detect_sources(Roots())), Roots())
        )
    for device, roots in targets:
        share, samples, sources = measure(roots, args.seconds, args.hz)
        verdict = "ok" if share < 1.0 else "ABOVE"
        print(f"| {device} | {sources} | {samples} | {share:.2f} | < 1 {verdict} |")


if __name__ == "__main__":
    main()
