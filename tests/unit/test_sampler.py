"""The real sampler and runner against fixture trees whose counters move during a run."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from edgebench.agent.runner import run_benchmark
from edgebench.agent.sampler import Sampler
from edgebench.agent.sensors import Roots, bitmask_sources, detect_sources
from edgebench.measure.energy import throttle_events
from edgebench.workload import RunSpec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def copy_device(device: str, tmp_path: Path) -> Path:
    target = tmp_path / device
    shutil.copytree(FIXTURES / device, target, symlinks=True)
    return target


class PowerMeter(threading.Thread):
    """Advances a RAPL energy counter like a CPU drawing `watts`, as real time passes."""

    def __init__(self, energy_file: Path, watts: float) -> None:
        super().__init__(daemon=True)
        self.file, self.watts = energy_file, watts
        self.stop = threading.Event()
        self.uj = float(energy_file.read_text())

    def run(self) -> None:
        last = time.perf_counter()
        while not self.stop.is_set():
            now = time.perf_counter()
            self.uj += self.watts * (now - last) * 1e6
            last = now
            partial = self.file.with_name("energy_uj.tmp")
            partial.write_text(f"{int(self.uj)}\n")
            os.replace(partial, self.file)  # a reader never sees a half-written file
            time.sleep(0.002)


def test_energy_per_token_from_a_counter_moving_at_a_known_rate(
    tiny_model: Path, tmp_path: Path
) -> None:
    device = copy_device("intel_desktop", tmp_path)
    meter = PowerMeter(device / "sys/class/powercap/intel-rapl:0/energy_uj", watts=2.0)
    meter.start()

    def busy_when_measuring(phase: str, done: int, total: int) -> None:
        if phase in ("warmup", "measuring"):
            meter.watts = 10.0  # the model runs: 10 W against 2 W at rest

    spec = RunSpec.of(n_prompt=(32,), n_gen=(64,), reps=5, idle_seconds=0.6)
    roots = Roots(sysfs=device / "sys")
    try:
        result = run_benchmark(tiny_model, spec, cache_dir=tmp_path / "cache", roots=roots,
                               progress=busy_when_measuring)[0]  # fmt: skip
    finally:
        meter.stop.set()
    sensors = result.sensors
    assert sensors["energy_scope"] == "cpu_package"
    assert sensors["idle_power_w"] == pytest.approx(2.0, rel=0.15)
    assert result.avg_power_w == pytest.approx(10.0, rel=0.15)
    decode_s = sum((r.token_ns[-1] - r.token_ns[0]) / 1e9 for r in result.rep_timings)
    expected = (10.0 - sensors["idle_power_w"]) * decode_s / ((64 - 1) * 5)
    assert result.decode_j_per_token == pytest.approx(expected, rel=0.2)
    assert sensors["decode_j_per_token_gross"] == pytest.approx(10.0 * decode_s / 315, rel=0.2)
    assert result.prefill_j_per_token is not None and result.prefill_j_per_token > 0
    assert result.temp_max_c == 55.0 and result.throttled is False
    assert sensors["clock_max_mhz"] == pytest.approx(1699.981)
    assert any(s[1] == "rapl" for s in sensors["samples"])
    assert result.environment["sensor_sources"] == ["cpufreq", "rapl", "thermal"]
    assert result.environment["power_state"]["cpufreq_governor"] == "powersave"


def test_a_throttle_counter_that_goes_up_mid_run(tiny_model: Path, tmp_path: Path) -> None:
    device = copy_device("intel_desktop", tmp_path)
    counter = device / "sys/devices/system/cpu/cpu1/thermal_throttle/core_throttle_count"

    def throttle_on_second_rep(phase: str, done: int, total: int) -> None:
        if phase == "measuring" and done == 1:
            counter.write_text("1\n")

    spec = RunSpec.of(n_prompt=(16,), n_gen=(16,), reps=3, idle_seconds=0.2)
    roots = Roots(sysfs=device / "sys")
    result = run_benchmark(tiny_model, spec, cache_dir=tmp_path / "cache", roots=roots,
                           progress=throttle_on_second_rep)[0]  # fmt: skip
    assert result.throttled is True
    [event] = result.sensors["throttle_events"]
    assert event["source"] == "cpufreq" and event["count_delta"] == 1 and event["t_s"] >= 0


def test_no_sensors_means_unknown_not_zero(tiny_model: Path, tmp_path: Path) -> None:
    spec = RunSpec.of(n_prompt=(8,), n_gen=(8,), reps=2)
    roots = Roots(sysfs=FIXTURES / "no_sensors" / "sys")
    started = time.monotonic()
    result = run_benchmark(tiny_model, spec, cache_dir=tmp_path, roots=roots)[0]
    assert time.monotonic() - started < 5  # no idle baseline without a power sensor
    assert result.avg_power_w is None and result.decode_j_per_token is None
    assert result.temp_max_c is None and result.throttled is None
    assert result.sensors["energy_scope"] is None


def test_raspberry_pi_throttle_bits_turning_on(tmp_path: Path) -> None:
    device = copy_device("raspberrypi5", tmp_path)
    (device / "state").mkdir()
    tools = f"{device / 'bin'}:/usr/bin:/bin"
    sources = detect_sources(Roots(sysfs=device / "sys", path=tools))
    with Sampler(sources, hz=20) as sampler:
        sampler.sample_now()
        start = time.perf_counter_ns()
        (device / "state" / "throttled").write_text("throttled=0x50005\n")
        time.sleep(0.1)
        sampler.sample_now()
    [event] = throttle_events(sampler.snapshot(), start, bitmask_sources(sources))
    assert event["count_delta"] == 0  # a bit mask is not a counter of events
    assert event["source"] == "raspberrypi"
    assert {"under_voltage_now", "throttled_now", "under_voltage_since_boot",
            "throttled_since_boot"} <= set(event["flags_on"])  # fmt: skip
    assert "soft_temperature_limit_now" not in event["flags_on"]


def test_a_clock_under_its_ceiling_while_heating_is_a_throttle_event(
    tiny_model: Path, tmp_path: Path
) -> None:
    device = copy_device("raspberrypi4", tmp_path)  # cpufreq 600 of 1500 MHz, 47.2 C
    zone = device / "sys/class/thermal/thermal_zone0/temp"
    (device / "sys/devices/platform/soc/soc:firmware/get_throttled").write_text("0\n")

    def heat_up(phase: str, done: int, total: int) -> None:
        if phase == "measuring" and done == 1:
            zone.write_text("81500\n")  # hot, and the firmware bits say nothing

    spec = RunSpec.of(n_prompt=(16,), n_gen=(16,), reps=3, idle_seconds=0)
    roots = Roots(sysfs=device / "sys", path="/usr/bin:/bin")
    result = run_benchmark(
        tiny_model, spec, cache_dir=tmp_path / "cache", roots=roots, progress=heat_up
    )[0]
    assert result.throttled is True and result.temp_max_c == 81.5
    events = result.sensors["throttle_events"]
    drop = next(e for e in events if "clock_below_max_while_heating" in e["flags_on"])
    assert drop["name"] == "cpu0" and drop["clock_mhz"] == 600.0 and drop["max_mhz"] == 1500.0
