"""Charts as server-rendered SVG: no script, no library, nothing to download, and they
draw wherever the page does. Hover details are SVG <title> elements (the browser's own
tooltip); a point that leads somewhere is a link. Every text is escaped here; colours
come from the page's CSS variables so that dark mode recolours them.

Each function takes plain numbers and labels and returns markup for a template."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 58, 16, 30, 40
DOTTED = 60  # lines with at most this many points also mark each point
PALETTE = 6  # series colours: CSS classes s0..s5


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str = ""  # the hover text
    href: str = ""  # where a click goes
    series: int = 0


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]


@dataclass(frozen=True)
class Bar:
    label: str
    value: float | None
    whisker: float | None = None  # half width of the interval drawn around the value
    series: int = 0
    href: str = ""


@dataclass
class _Axis:
    low: float
    high: float
    log: bool = False
    ticks: list[float] = field(default_factory=list)

    @classmethod
    def fit(cls, values: Sequence[float], *, zero: bool = True) -> _Axis:
        finite = [v for v in values if math.isfinite(v)] or [0.0, 1.0]
        low, high = min(finite), max(finite)
        if zero:
            low = min(low, 0.0)
        if high <= low:
            high = low + (abs(low) or 1.0)
        step = _nice_step((high - low) / 4)
        low, high = math.floor(low / step) * step, math.ceil(high / step) * step
        ticks = [low + i * step for i in range(round((high - low) / step) + 1)]
        return cls(low, high, ticks=ticks)

    def place(self, value: float, start: float, end: float) -> float:
        return float(start + (value - self.low) / (self.high - self.low) * (end - start))


def _nice_step(raw: float) -> float:
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    return float(next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw))


def _num(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _el(tag: str, text: str = "", **attrs: object) -> str:
    """One SVG element; attribute values and the text are escaped (class_ -> class)."""
    rendered = " ".join(
        f'{name.rstrip("_").replace("_", "-")}="{escape(_attr(value))}"'
        for name, value in attrs.items()
    )
    return f"<{tag} {rendered}>{text}</{tag}>"


def _attr(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def _hover(text: str) -> str:
    return f"<title>{escape(text)}</title>"


def _frame(
    title: str,
    labels: tuple[str, str],
    body: list[str],
    x: _Axis,
    y: _Axis,
    x_ticks: list[tuple[float, str]] | None = None,
    empty: str = "no data to draw",
) -> Markup:
    bottom, right = HEIGHT - BOTTOM, WIDTH - RIGHT
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        _hover(title),
        _el("text", escape(title), class_="title", x=LEFT, y=16),
    ]
    if not body:
        body = [_el("text", escape(empty), class_="nodata", x=(LEFT + right) / 2,
                    y=(TOP + bottom) / 2, text_anchor="middle")]  # fmt: skip
    for tick in y.ticks:
        ty = y.place(tick, bottom, TOP)
        parts.append(_el("line", class_="grid", x1=LEFT, x2=right, y1=ty, y2=ty))
        parts.append(_el("text", _num(tick), class_="tick", x=LEFT - 6, y=ty + 4,
                         text_anchor="end"))  # fmt: skip
    for tick, text in x_ticks if x_ticks is not None else [(t, _num(t)) for t in x.ticks]:
        tx = x.place(tick, LEFT, right)
        parts.append(_el("text", escape(text), class_="tick", x=tx, y=bottom + 16,
                         text_anchor="middle"))  # fmt: skip
    parts.append(_el("line", class_="axis", x1=LEFT, x2=right, y1=bottom, y2=bottom))
    parts.append(_el("line", class_="axis", x1=LEFT, x2=LEFT, y1=TOP, y2=bottom))
    parts.append(_el("text", escape(labels[0]), class_="label", x=(LEFT + right) / 2,
                     y=HEIGHT - 4, text_anchor="middle"))  # fmt: skip
    parts.append(_el("text", escape(labels[1]), class_="label", text_anchor="middle",
                     transform=f"translate(12 {(TOP + bottom) / 2}) rotate(-90)"))  # fmt: skip
    parts += body
    parts.append("</svg>")
    return Markup("".join(parts))  # every text above went through escape()


def scatter(points: Sequence[Point], title: str, x_label: str, y_label: str) -> Markup:
    """Points with a hover text each; a point with an href is a link."""
    shown = [p for p in points if math.isfinite(p.x) and math.isfinite(p.y)]
    x, y = _Axis.fit([p.x for p in shown]), _Axis.fit([p.y for p in shown])
    body = []
    for p in shown:
        cx, cy = x.place(p.x, LEFT, WIDTH - RIGHT), y.place(p.y, HEIGHT - BOTTOM, TOP)
        dot = _el("circle", _hover(p.label), class_=f"dot s{p.series % PALETTE}", cx=cx, cy=cy,
                  r=5)  # fmt: skip
        body.append(_el("a", dot, href=p.href) if p.href else dot)
    return _frame(title, (x_label, y_label), body, x, y)


def lines(
    series: Sequence[Series],
    title: str,
    x_label: str,
    y_label: str,
    *,
    markers: Sequence[tuple[float, str]] = (),
    x_range: tuple[float, float] | None = None,
    zero: bool = True,
    steps: bool = False,
) -> Markup:
    """One polyline per series (a legend names them); `markers` are vertical lines at x
    with a hover text (throttle events); `x_range` shares an axis between charts."""
    xs = [px for s in series for px, _ in s.points] + [m for m, _ in markers]
    x = _Axis.fit(list(x_range) if x_range else xs, zero=zero)
    y = _Axis.fit([py for s in series for _, py in s.points], zero=zero)
    body = []
    for index, one in enumerate(series):
        finite = [(px, py) for px, py in one.points if math.isfinite(px) and math.isfinite(py)]
        placed = [(x.place(px, LEFT, WIDTH - RIGHT), y.place(py, HEIGHT - BOTTOM, TOP))
                  for px, py in finite]  # fmt: skip
        coords = placed
        if steps and coords:
            coords = [placed[0]]
            for cx, cy in placed[1:]:
                coords += [(cx, coords[-1][1]), (cx, cy)]
        text = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords)
        colour = f"s{index % PALETTE}"
        body.append(_el("polyline", _hover(one.name), class_=f"line {colour}", points=text))
        body.append(_el("text", escape(one.name), class_=f"legend {colour}", x=LEFT + 8,
                        y=TOP + 14 + 14 * index))  # fmt: skip
        if len(finite) <= DOTTED:
            for (px, py), (cx, cy) in zip(finite, placed, strict=True):
                hover = _hover(f"{one.name}: {_num(py)} at {_num(px)}")
                body.append(_el("circle", hover, class_=f"dot {colour}", cx=cx, cy=cy, r=3))
    for at, text in markers:
        mx = x.place(at, LEFT, WIDTH - RIGHT)
        body.append(_el("line", _hover(text), class_="marker", x1=mx, x2=mx, y1=TOP,
                        y2=HEIGHT - BOTTOM))  # fmt: skip
    return _frame(title, (x_label, y_label), body, x, y)


def bars(
    items: Sequence[Bar],
    title: str,
    y_label: str,
    *,
    series_names: Sequence[str] = (),
    empty: str = "no data to draw",
) -> Markup:
    """Grouped bars by label (one bar per series within a label), with whiskers where
    an interval is known. A missing value (None) draws no bar and says so on hover."""
    labels = list(dict.fromkeys(item.label for item in items))
    n_series = max((item.series for item in items), default=0) + 1
    tops = [(i.value or 0) + (i.whisker or 0) for i in items]
    y = _Axis.fit(tops)
    x = _Axis(0, max(len(labels), 1))
    slot = (WIDTH - RIGHT - LEFT) / max(len(labels), 1)
    width = slot * 0.8 / n_series
    body = []
    for item in items:
        left = LEFT + labels.index(item.label) * slot + slot * 0.1 + item.series * width
        name = series_names[item.series] + " · " if item.series < len(series_names) else ""
        if item.value is None:
            body.append(_el("rect", _hover(f"{name}{item.label}: unknown"), class_="missing",
                            x=left, y=HEIGHT - BOTTOM - 2, width=width, height=2))  # fmt: skip
            continue
        top = y.place(item.value, HEIGHT - BOTTOM, TOP)
        spread = f" ± {_num(item.whisker)}" if item.whisker else ""
        hover = f"{name}{item.label}: {_num(item.value)}{spread} {y_label}"
        rect = _el("rect", _hover(hover), class_=f"bar s{item.series % PALETTE}", x=left, y=top,
                   width=width, height=HEIGHT - BOTTOM - top)  # fmt: skip
        body.append(_el("a", rect, href=item.href) if item.href else rect)
        if item.whisker:
            cx = left + width / 2
            high = y.place(item.value + item.whisker, HEIGHT - BOTTOM, TOP)
            low = y.place(max(item.value - item.whisker, y.low), HEIGHT - BOTTOM, TOP)
            path = (
                f"M{cx:.1f},{low:.1f}V{high:.1f}M{cx - 4:.1f},{high:.1f}h8M{cx - 4:.1f},{low:.1f}h8"
            )
            body.append(_el("path", class_="whisker", d=path))
    for index, name in enumerate(series_names if n_series > 1 else ()):
        legend_y = TOP + 12 + 14 * index
        body.append(_el("text", escape(name), class_=f"legend s{index % PALETTE}",
                        x=WIDTH - RIGHT - 4, y=legend_y, text_anchor="end"))  # fmt: skip
    ticks = [(i + 0.5, _short(label)) for i, label in enumerate(labels)]
    if all(item.value is None for item in items):
        body = []
    return _frame(title, ("", y_label), body, x, y, x_ticks=ticks, empty=empty)


def histogram(values: Sequence[float], title: str, x_label: str, bins: int = 30) -> Markup:
    """How values spread (inter-token gaps): counts per equal-width bin."""
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        finite = [0.0]
    low, high = finite[0], finite[-1]
    width = (high - low) / bins or 1.0
    counts = [0] * bins
    for value in finite:
        counts[min(int((value - low) / width), bins - 1)] += 1
    x = _Axis.fit([low, low + width * bins], zero=False)
    y = _Axis.fit(counts)
    body = []
    for index, count in enumerate(counts):
        start = low + index * width
        left, right = (
            x.place(start, LEFT, WIDTH - RIGHT),
            x.place(start + width, LEFT, WIDTH - RIGHT),
        )
        top = y.place(count, HEIGHT - BOTTOM, TOP)
        hover = f"{_num(start)} to {_num(start + width)} {x_label}: {count}"
        wide = max(right - left - 1, 1.0)
        body.append(_el("rect", _hover(hover), class_="bar s0", x=left, y=top, width=wide,
                        height=HEIGHT - BOTTOM - top))  # fmt: skip
    return _frame(title, (x_label, "count"), body, x, y)


def _short(label: str, width: int = 18) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"
