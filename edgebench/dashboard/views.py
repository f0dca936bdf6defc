"""What the pages draw: results and their samples turned into chart inputs and compare
tables. Pure functions over the public models; pages.py routes, templates lay out."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from edgebench.dashboard import charts
from edgebench.dashboard.charts import Bar, Point, Series
from edgebench.dashboard.models import LeaderboardRow, ResultPublic, ResultSummary
from edgebench.measure.record import BOOLEAN_FIELDS, NUMERIC_FIELDS, RESULT_FIELDS

UNITS = {name: unit for name, unit, _ in RESULT_FIELDS}
MEANINGS = {name: meaning for name, _, meaning in RESULT_FIELDS}
AXES = tuple(name for name, _, _ in RESULT_FIELDS if name in NUMERIC_FIELDS)
INTERVALS = {"prefill_tps": "prefill_tps_ci95", "decode_tps": "decode_tps_ci95"}
SCATTER_CAP = 500  # points drawn; the page says when more rows match
MAX_COMPARED = 4


def axis_title(name: str) -> str:
    unit = UNITS.get(name, "")
    return f"{name} ({unit})" if unit else name


def describe(result: ResultSummary) -> str:
    f = result.fields
    test = f"p{f['n_prompt']} g{f['n_gen']}"
    return (f"{result.model} · {f['variant'] or 'as is'} · {f['backend']} · "
            f"{result.device_name} · {test} · {f['threads']} threads")  # fmt: skip


# ---- leaderboard ------------------------------------------------------------------------


def scatter(rows: Sequence[LeaderboardRow], x: str, y: str) -> tuple[Markup, int]:
    """The leaderboard's scatter, and how many rows had no value on an axis."""
    points, missing = [], 0
    for index, row in enumerate(rows):
        fx, fy = row.result.fields.get(x), row.result.fields.get(y)
        if not isinstance(fx, int | float) or not isinstance(fy, int | float):
            missing += 1
            continue
        label = f"{describe(row.result)}\n{x} = {fx:.4g}, {y} = {fy:.4g}"
        points.append(Point(float(fx), float(fy), label, f"/results/{row.result.id}", index))
    title = f"{y} against {x}"
    return charts.scatter(points, title, axis_title(x), axis_title(y)), missing


def default_x(rows: Sequence[LeaderboardRow]) -> str:
    """J/token when any row has it; else peak memory (a machine without a power sensor)."""
    if any(r.result.fields.get("decode_j_per_token") is not None for r in rows):
        return "decode_j_per_token"
    return "peak_rss_mb"


# ---- one result ---------------------------------------------------------------------------


def token_timeline(results: Sequence[ResultPublic], *, first_rep_only: bool = False) -> Markup:
    """Tokens generated against time since each repetition began, one line per rep (or
    per result, its first rep, when comparing)."""
    series = []
    for result in results:
        for index, rep in enumerate(result.rep_timings or []):
            points = [(0.0, 0.0), (rep["prefill_ns"] / 1e6, 0.0)]
            points += [(t / 1e6, float(n + 1)) for n, t in enumerate(rep["token_ns"])]
            name = describe(result) if first_rep_only else f"rep {index + 1}"
            series.append(Series(name, points))
            if first_rep_only:
                break
    return charts.lines(series, "Tokens over time", "ms since the repetition began", "tokens")


def itl_values(result: ResultPublic) -> list[float]:
    """Every inter-token gap of every repetition, ms (from the raw timestamps)."""
    gaps = []
    for rep in result.rep_timings or []:
        stamps = rep["token_ns"]
        gaps += [(b - a) / 1e6 for a, b in itertools.pairwise(stamps)]
    return gaps


def itl_histogram(result: ResultPublic) -> Markup:
    return charts.histogram(itl_values(result), "Inter-token latency", "ms")


SENSOR_KINDS = {"temperature": "°C", "frequency": "MHz", "power": "W"}


def sensor_series(result: ResultPublic) -> dict[str, list[Series]]:
    """Samples by kind, one series per (source, name)."""
    by_kind: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for sample in result.sensors.get("samples") or []:
        if not isinstance(sample, list) or len(sample) != 5:
            continue
        t, source, name, kind, value = sample
        if kind in SENSOR_KINDS and _finite(t) and _finite(value):
            key = f"{source}/{name}"
            by_kind.setdefault(kind, {}).setdefault(key, []).append((float(t), float(value)))
    return {kind: [Series(k, v) for k, v in sorted(s.items())] for kind, s in by_kind.items()}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def throttle_markers(result: ResultPublic) -> list[tuple[float, str]]:
    events = result.sensors.get("throttle_events") or []
    return [
        (
            float(e["t_s"]),
            f"throttle: {e.get('what') or e.get('source') or 'event'} at {e['t_s']} s",
        )
        for e in events
        if isinstance(e, dict) and _finite(e.get("t_s"))
    ]


def sensor_charts(result: ResultPublic) -> list[Markup]:
    """Throughput windows (sustained runs), then each sensor kind, on one time axis with
    throttle events marked."""
    by_kind = sensor_series(result)
    markers = throttle_markers(result)
    span = [t for series in by_kind.values() for s in series for t, _ in s.points]
    windows = _windows(result)
    span += [t for t, _ in windows]
    if not span:
        return []
    shared = (min(span), max(span))
    out = []
    if windows:
        out.append(charts.lines([Series("decode tok/s per window", windows)],
                                "Sustained throughput", "s", "tokens/s", markers=markers,
                                x_range=shared, steps=True))  # fmt: skip
    for kind, unit in SENSOR_KINDS.items():
        if kind in by_kind:
            out.append(charts.lines(by_kind[kind], kind.capitalize(), "s", unit, markers=markers,
                                    x_range=shared, zero=False))  # fmt: skip
    return out


def _windows(result: ResultPublic) -> list[tuple[float, float]]:
    if not result.window_s or not result.windows_tps:
        return []
    return [(i * result.window_s, tps) for i, tps in enumerate(result.windows_tps)]


# ---- a device's results ------------------------------------------------------------------


def throughput_bars(rows: Sequence[LeaderboardRow]) -> Markup:
    items = []
    for row in rows:
        f, label = row.result.fields, _variant_label(row.result)
        href = f"/results/{row.result.id}"
        items.append(Bar(label, f["prefill_tps"], f["prefill_tps_ci95"], 0, href))
        items.append(Bar(label, f["decode_tps"], f["decode_tps_ci95"], 1, href))
    return charts.bars(items, "Throughput per variant (95% interval)", "tokens/s",
                       series_names=("prefill", "decode"))  # fmt: skip


def energy_bars(rows: Sequence[LeaderboardRow | ResultSummary]) -> Markup:
    items = []
    for row in rows:
        result = row.result if isinstance(row, LeaderboardRow) else row
        f, label = result.fields, _variant_label(result)
        items.append(Bar(label, f["prefill_j_per_token"], None, 0))
        items.append(Bar(label, f["decode_j_per_token"], None, 1))
    return charts.bars(items, "Energy per token by phase", "J/token",
                       series_names=("prefill", "decode"),
                       empty="unknown: no power sensor was read on these runs")  # fmt: skip


def _variant_label(result: ResultSummary) -> str:
    f = result.fields
    return f"{result.model[:12]} {f['variant'] or 'as is'} p{f['n_prompt']}"


def history(results: Sequence[ResultSummary]) -> Markup:
    """Decode and prefill tok/s of one test over time (days since the first result)."""
    if not results:
        return charts.lines([], "History", "days", "tokens/s")
    first = min(r.created_at for r in results)
    ordered = sorted(results, key=lambda r: r.created_at)

    def days(r: ResultSummary) -> float:
        return (r.created_at - first).total_seconds() / 86400

    series = [
        Series(name, [(days(r), r.fields[name]) for r in ordered])
        for name in ("decode_tps", "prefill_tps")
    ]
    return charts.lines(series, "History of this test", "days since the first result", "tokens/s")


# ---- compare --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompareCell:
    value: Any
    ratio: float | None  # to the first column
    differs: bool | None  # None: the field has no interval to judge by


@dataclass(frozen=True)
class CompareLine:
    name: str
    unit: str
    meaning: str
    cells: list[CompareCell]


def compare_table(results: Sequence[ResultSummary]) -> list[CompareLine]:
    """Every field side by side with its ratio to the first column; where a field has an
    interval, a difference is marked when |a - b| > sqrt(ci_a^2 + ci_b^2)."""
    lines = []
    base = results[0].fields if results else {}
    for name, unit, meaning in RESULT_FIELDS:
        cells = []
        for result in results:
            value = result.fields.get(name)
            cells.append(CompareCell(value, _ratio(value, base.get(name), name),
                                     _differs(result.fields, base, name)))  # fmt: skip
        lines.append(CompareLine(name, unit, meaning, cells))
    return lines


def _ratio(value: Any, first: Any, name: str) -> float | None:
    if name in BOOLEAN_FIELDS or name not in NUMERIC_FIELDS:
        return None
    if not isinstance(value, int | float) or not isinstance(first, int | float) or not first:
        return None
    return float(value) / float(first)


def _differs(fields: dict[str, Any], base: dict[str, Any], name: str) -> bool | None:
    interval = INTERVALS.get(name)
    if interval is None:
        return None
    try:
        a, b = float(fields[name]), float(base[name])
        ci_a, ci_b = float(fields[interval]), float(base[interval])
    except (KeyError, TypeError, ValueError):
        return None
    return abs(a - b) > math.hypot(ci_a, ci_b)


def compare_bars(results: Sequence[ResultSummary]) -> Markup:
    names = [f"{i + 1}: {describe(r)[:40]}" for i, r in enumerate(results)]
    items = []
    for index, result in enumerate(results):
        for field in ("prefill_tps", "decode_tps"):
            f = result.fields
            items.append(Bar(field, f[field], f[INTERVALS[field]], index, f"/results/{result.id}"))
    return charts.bars(items, "Throughput (95% interval)", "tokens/s", series_names=names)
