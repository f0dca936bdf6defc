"""The energy maths on synthetic samples (no sensors, no sampler thread): joules per phase
with the idle baseline taken off, counters over integrated power, throttle events by
what each source declares, unknown as None."""

from __future__ import annotations

import pytest

from edgebench.measure.energy import (
    EnergyTimeline,
    PhaseWindows,
    Window,
    sensor_summary,
    throttle_events,
)
from edgebench.measure.readings import Reading, Sample

S = 1_000_000_000


def _power(t_s: float, watts: float, source: str = "rapl") -> Sample:
    reading = Reading(source, "power", "package", "cpu_package", "W", watts, primary=True)
    return Sample(int(t_s * S), reading)


def _throttle(
    t_s: float, value: float, source: str, flags: dict[str, bool] | None = None
) -> Sample:
    return Sample(int(t_s * S), Reading(source, "throttle", "t", "soc", "", value, flags=flags))


def test_joules_per_token_take_the_idle_baseline_off() -> None:
    # 2 W at rest for 1 s, then 10 W for the 1 s prefill and 2 s decode
    samples = [_power(t, 2.0) for t in (0.0, 0.5, 1.0)] + [
        _power(t, 10.0) for t in (1.0001, 2.0, 3.0, 4.0)
    ]
    phases = PhaseWindows(
        prefill=[Window(int(1.5 * S), int(2.5 * S))],
        decode=[Window(int(2.5 * S), int(3.5 * S))],
        prefill_tokens=100,
        decode_tokens=50,
    )
    summary = sensor_summary(samples, phases, Window(0, S))
    assert summary["idle_power_w"] == pytest.approx(2.0)
    assert summary["prefill_j_gross"] == pytest.approx(10.0, rel=1e-3)
    assert summary["prefill_j_per_token"] == pytest.approx(8.0 / 100, rel=1e-3)
    assert summary["decode_j_per_token"] == pytest.approx(8.0 / 50, rel=1e-3)
    assert summary["avg_power_w"] == pytest.approx(10.0, rel=1e-3)


def test_no_energy_sensor_is_unknown_not_zero() -> None:
    phases = PhaseWindows([Window(0, S)], [Window(S, 2 * S)], 10, 10)
    summary = sensor_summary([], phases, None)
    assert summary["avg_power_w"] is None and summary["decode_j_per_token"] is None
    assert summary["throttled"] is None  # no throttle signal: cannot tell


def test_a_counter_wins_over_integrated_power_of_the_same_source() -> None:
    energy = [Sample(t * S, Reading("gpu", "energy", "e", "gpu_board", "J", 100.0 + 50 * t,
                                    primary=True)) for t in (0, 1)]  # fmt: skip
    power = [_power(t, 70.0, source="gpu") for t in (0, 1)]
    assert EnergyTimeline.of(energy + power).between(0, S) == pytest.approx(50.0)


def test_throttle_values_are_read_as_their_source_declares() -> None:
    counter = [_throttle(0, 3, "cpufreq"), _throttle(1, 5, "cpufreq")]
    [event] = throttle_events(counter, 0)
    assert event["count_delta"] == 2 and event["t_s"] == 1.0
    mask = [_throttle(0, 0x5, "board", {"hot": False}), _throttle(1, 0x1, "board", {"hot": True})]
    assert throttle_events(mask, 0)[0]["count_delta"] == 0  # read as a counter: no rise
    [flagged] = throttle_events(mask, 0, bitmask=frozenset({"board"}))
    assert flagged["flags_on"] == ["hot"] and flagged["count_delta"] == 0
    falling = [_throttle(0, 0x5, "board"), _throttle(1, 0x7, "board")]
    assert throttle_events(falling, 0, bitmask=frozenset({"board"})) == []  # bits, not events
