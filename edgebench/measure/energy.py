"""Energy, temperatures, clocks and throttle events of a run, from its sensor samples:
pure functions over `Sample`s (the agent's sampler collects them; tests feed them)."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgebench.measure.readings import Reading, Sample


@dataclass
class EnergyTimeline:
    """Cumulative energy (J) of the device's primary scopes, as a function of time.
    Energy counters are used as they are; power readings are integrated (trapezoid).
    Where a source has both, the counter wins (it is what the hardware accumulated)."""

    series: dict[tuple[str, str], list[tuple[int, float]]] = field(default_factory=dict)
    scopes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, samples: Iterable[Sample]) -> EnergyTimeline:
        energy: dict[tuple[str, str], list[tuple[int, float]]] = {}
        power: dict[tuple[str, str], list[tuple[int, float]]] = {}
        scopes: dict[tuple[str, str], str] = {}
        for s in samples:
            r = s.reading
            if not r.primary or r.value is None:
                continue
            key = (r.source, r.name)
            scopes[key] = r.scope
            (energy if r.kind == "energy" else power).setdefault(key, []).append((s.t_ns, r.value))
        series = dict(energy)
        for key, points in power.items():
            if (key[0], key[1]) in series or any(k[0] == key[0] for k in energy):
                continue
            series[key] = _integrate(points)
        return cls(series, sorted({scopes[k] for k in series}))

    def at(self, t_ns: int) -> float | None:
        """Total cumulative energy at t (linear between samples), None outside coverage."""
        total = 0.0
        for points in self.series.values():
            value = _interpolate(points, t_ns)
            if value is None:
                return None
            total += value
        return total if self.series else None

    def between(self, start_ns: int, end_ns: int) -> float | None:
        first, last = self.at(start_ns), self.at(end_ns)
        return None if first is None or last is None else last - first


def _integrate(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    cumulative = [(points[0][0], 0.0)]
    for (t0, p0), (t1, p1) in itertools.pairwise(points):
        cumulative.append((t1, cumulative[-1][1] + (p0 + p1) / 2 * (t1 - t0) / 1e9))
    return cumulative


def _interpolate(points: list[tuple[int, float]], t_ns: int) -> float | None:
    times = [t for t, _ in points]
    if not points or t_ns < times[0] or t_ns > times[-1]:
        return None
    index = bisect.bisect_left(times, t_ns)
    if times[index] == t_ns:
        return points[index][1]
    (t0, v0), (t1, v1) = points[index - 1], points[index]
    return v0 + (v1 - v0) * (t_ns - t0) / (t1 - t0)


@dataclass(frozen=True)
class Window:
    start_ns: int
    end_ns: int

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


def throttle_events(
    samples: Sequence[Sample], origin_ns: int, bitmask: frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    """Every change of a throttle reading after its first sample: flags that turned on and
    counters that went up, with the time (s from origin). `bitmask` names the sources
    whose throttle value holds flags, not an event counter (their traits say so)."""
    first: dict[tuple[str, str], Reading] = {}
    events = []
    for s in samples:
        r = s.reading
        if r.kind != "throttle" or r.value is None:
            continue
        key = (r.source, r.name)
        before = first.get(key)
        if before is None:
            first[key] = r
            continue
        turned_on = sorted(k for k, on in (r.flags or {}).items()
                           if on and not (before.flags or {}).get(k))  # fmt: skip
        is_counter = r.source not in bitmask
        counter_up = is_counter and before.value is not None and r.value > before.value
        if turned_on or counter_up:
            delta = r.value - (before.value or 0) if counter_up else 0
            events.append({
                "t_s": round((s.t_ns - origin_ns) / 1e9, 3),
                "source": r.source,
                "name": r.name,
                "flags_on": turned_on,
                "count_delta": delta,
            })  # fmt: skip
            first[key] = r
    return events


AFTER_RUN_NS = 500_000_000


@dataclass(frozen=True)
class PhaseWindows:
    prefill: list[Window]
    decode: list[Window]
    prefill_tokens: int
    decode_tokens: int

    @property
    def span(self) -> Window:
        return Window(self.prefill[0].start_ns, self.decode[-1].end_ns)


def sensor_summary(
    samples: Sequence[Sample],
    phases: PhaseWindows,
    idle: Window | None,
    bitmask: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Energy per phase (gross and idle-subtracted), J/token, average power, temperatures,
    clocks and throttle events of one run. Missing sensors give None, never zero."""
    timeline = EnergyTimeline.of(samples)
    span = phases.span
    idle_j = timeline.between(idle.start_ns, idle.end_ns) if idle else None
    idle_w = idle_j / idle.seconds if idle and idle_j is not None and idle.seconds > 0 else None
    summary: dict[str, Any] = {"energy_scope": "+".join(timeline.scopes) or None,
                               "idle_power_w": idle_w}  # fmt: skip
    total_j = timeline.between(span.start_ns, span.end_ns)
    summary["avg_power_w"] = total_j / span.seconds if total_j is not None else None
    for phase, windows, tokens in (("prefill", phases.prefill, phases.prefill_tokens),
                                   ("decode", phases.decode, phases.decode_tokens)):  # fmt: skip
        parts = [timeline.between(w.start_ns, w.end_ns) for w in windows]
        gross = None if any(p is None for p in parts) else sum(p or 0.0 for p in parts)
        seconds = sum(w.seconds for w in windows)
        net = gross - idle_w * seconds if gross is not None and idle_w is not None else None
        summary[f"{phase}_j_gross"] = gross
        summary[f"{phase}_j_net"] = net
        summary[f"{phase}_j_per_token_gross"] = gross / tokens if gross is not None else None
        summary[f"{phase}_j_per_token"] = max(net, 0.0) / tokens if net is not None else None
    in_run = around(samples, span)
    temps = [s for s in samples if s.reading.kind == "temperature"]
    summary.update(_temperatures(temps, span))
    clocks = [s.reading.value for s in in_run
              if s.reading.kind == "frequency" and s.reading.scope == "cpu_core"]  # fmt: skip
    summary["clock_min_mhz"] = min(clocks) if clocks else None  # type: ignore[type-var]
    summary["clock_max_mhz"] = max(clocks) if clocks else None  # type: ignore[type-var]
    has_throttle_source = any(s.reading.kind == "throttle" for s in samples)
    # The forced read just after the run sees what changed during it.
    seen_until = span.end_ns + AFTER_RUN_NS
    events = throttle_events([s for s in samples if s.t_ns <= seen_until], span.start_ns, bitmask)
    events = [e for e in events if e["t_s"] >= 0]
    events += clock_drops(in_run, temps, span)
    summary["throttle_events"] = events
    can_tell = has_throttle_source or any(s.reading.maximum for s in in_run)
    summary["throttled"] = bool(events) if can_tell else None
    return summary


CLOCK_DROP = 0.9  # a clock under 90% of its ceiling ...
HEAT_RISE_C = 2.0  # ... while the device is this much hotter than at the start
NEAR_NS = 500_000_000  # temperatures read within this time of the clock reading


def clock_drops(
    in_run: Sequence[Sample], temps: Sequence[Sample], span: Window
) -> list[dict[str, Any]]:
    """Clocks that fell under their ceiling while the temperature rose: thermal throttling
    that no flag or counter reports (Pi without firmware bits, ARM cpufreq cooling)."""
    start_temps = [s.reading.value for s in temps if s.t_ns <= span.start_ns and s.reading.value]
    if not start_temps:
        return []
    start_temp = max(start_temps[-3:])
    events, seen = [], set()
    for sample in in_run:
        r = sample.reading
        if r.kind != "frequency" or not r.maximum or r.value is None or r.name in seen:
            continue
        near = [s.reading.value for s in temps if abs(s.t_ns - sample.t_ns) <= NEAR_NS]
        hot = [t for t in near if t is not None]
        if r.value < CLOCK_DROP * r.maximum and hot and max(hot) >= start_temp + HEAT_RISE_C:
            seen.add(r.name)
            events.append({
                "t_s": round((sample.t_ns - span.start_ns) / 1e9, 3),
                "source": r.source,
                "name": r.name,
                "flags_on": ["clock_below_max_while_heating"],
                "count_delta": 0,
                "clock_mhz": r.value,
                "max_mhz": r.maximum,
            })  # fmt: skip
    return events


def around(samples: Sequence[Sample], span: Window) -> list[Sample]:
    """The samples of a run, per sensor: from its last read at or before the start (the
    forced read) to its first read at or after the end, so a run shorter than the sampling
    period still has a value at each end."""
    by_sensor: dict[tuple[str, str, str], list[Sample]] = {}
    for sample in samples:
        r = sample.reading
        by_sensor.setdefault((r.source, r.kind, r.name), []).append(sample)
    kept: list[Sample] = []
    for series in by_sensor.values():
        before = [s.t_ns for s in series if s.t_ns <= span.start_ns]
        after = [s.t_ns for s in series if s.t_ns >= span.end_ns]
        first = before[-1] if before else span.start_ns
        last = after[0] if after else span.end_ns
        kept += [s for s in series if first <= s.t_ns <= last]
    return sorted(kept, key=lambda s: s.t_ns)


def _temperatures(temps: Sequence[Sample], span: Window) -> dict[str, float | None]:
    """The hottest sensor at the start and end of the run, and the hottest reading in it."""

    def hottest(chosen: list[Sample]) -> float | None:
        values = [s.reading.value for s in chosen if s.reading.value is not None]
        return max(values) if values else None

    before = [s for s in temps if s.t_ns <= span.start_ns]
    after = [s for s in temps if s.t_ns >= span.end_ns]
    during = [s for s in temps if span.start_ns <= s.t_ns <= span.end_ns]
    start = [s for s in before if s.t_ns == before[-1].t_ns] if before else []
    end = [s for s in after if s.t_ns == after[0].t_ns] if after else []
    return {
        "temp_start_c": hottest(start),
        "temp_max_c": hottest(start + during + end),
        "temp_end_c": hottest(end),
    }
