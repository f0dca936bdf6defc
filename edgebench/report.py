"""Printers for result rows, one per output format (llama-bench style). Every format
writes the same fields in the same order."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

FORMATS = ("md", "csv", "json", "jsonl")

Row = dict[str, Any]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def _columns(rows: Sequence[Row]) -> list[str]:
    return [key for key in rows[0] if key != "rep_timings"] if rows else []


def to_markdown(rows: Sequence[Row]) -> str:
    """The compact table (llama-bench's shape): two lines per result, prefill and decode."""
    table = compact(rows)
    if not table:
        return ""
    header, *body = table
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("--:" if h in _RIGHT else "---" for h in header) + "|")
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[Row]) -> str:
    columns = _columns(rows)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def to_json(rows: Sequence[Row]) -> str:
    return json.dumps(list(rows), indent=2) + "\n"


def to_jsonl(rows: Sequence[Row]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


PRINTERS: dict[str, Callable[[Sequence[Row]], str]] = {
    "md": to_markdown,
    "csv": to_csv,
    "json": to_json,
    "jsonl": to_jsonl,
}


def render(rows: Sequence[Row], fmt: str) -> str:
    if fmt not in PRINTERS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return PRINTERS[fmt](rows)


MODEL_WIDTH = 20  # longer names are cut in the compact table (csv/json keep them whole)
_RIGHT = {"size", "th", "t/s", "TTFT ms", "J/tok"}


def compact(rows: Sequence[Row]) -> list[list[str]]:
    """Header and cells of the compact view: model, size, backend, variant, threads, test,
    t/s with its 95% interval, TTFT, J/token and a `noisy` mark; the device first when the
    rows come from a coordinator. Unknown values (no sensor) are '-', never 0."""
    if not rows:
        return []
    with_device = "device" in rows[0]
    with_mark = any(row.get("noisy") for row in rows)  # the column only when it says something
    header = ["device"] if with_device else []
    header += ["model", "size", "backend", "variant", "th", "test", "t/s", "TTFT ms", "J/tok"]
    header += ["noisy"] if with_mark else []
    body = []
    for row in rows:
        common = ([str(row["device"])] if with_device else []) + [
            _short(str(row.get("model") or row.get("model_sha256", "")[:12])),
            _size(row.get("model_size_mb")),
            str(row.get("backend", "")),
            str(row.get("variant", "")),
            str(row.get("threads", "")),
        ]
        mark = "yes" if row.get("noisy") else ""
        depth = f" @ d{row['n_depth']}" if row.get("n_depth") else ""
        for phase, count, tps, joules, ttft in (
            ("pp", "n_prompt", "prefill_tps", "prefill_j_per_token", _num(row.get("ttft_ms"), 1)),
            ("tg", "n_gen", "decode_tps", "decode_j_per_token", ""),
        ):
            speed = _num(row.get(tps), 1)
            if row.get(f"{tps}_ci95") is not None and row.get(tps) is not None:
                speed += f"±{row[f'{tps}_ci95']:.1f}"
            test = f"{phase}{row.get(count, '')}{depth}"
            cells = [*common, test, speed, ttft, _num(row.get(joules), 4)]
            body.append([*cells, mark] if with_mark else cells)
    return [header, *body]


def _short(name: str) -> str:
    name = name.removesuffix(".gguf")
    return name if len(name) <= MODEL_WIDTH else name[: MODEL_WIDTH - 1] + "…"


def _size(mib: Any) -> str:
    if not isinstance(mib, (int, float)):
        return "-"
    return f"{mib / 1024:.2f}G" if mib >= 1024 else f"{mib:.1f}M"


def _num(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


IDENTITY = ("device", "model", "size", "backend", "variant", "th")


def summary_table(rows: Sequence[Row], title: str = "Results") -> Group:
    """The human table: the compact view, one small table per device, model, variant and
    thread count (named above it), so that it stays whole at 80 columns."""
    cells = compact(rows)
    if not cells:
        return Group()
    header, *body = cells
    shown = [i for i, name in enumerate(header) if name not in IDENTITY]
    groups: dict[tuple[str, ...], list[list[str]]] = {}
    for line in body:
        key = tuple(line[i] for i, name in enumerate(header) if name in IDENTITY)
        groups.setdefault(key, []).append([line[i] for i in shown])
    parts: list[Text | Table] = [Text(title, style="bold")]
    for key, lines in groups.items():
        names = IDENTITY if len(key) == len(IDENTITY) else IDENTITY[1:]
        parts.append(Text(_identity(dict(zip(names, key, strict=True))), style="cyan"))
        table = Table()
        for i in shown:
            table.add_column(header[i], justify="right" if header[i] in _RIGHT else "left",
                             no_wrap=True)  # fmt: skip
        for line in lines:
            table.add_row(*line)
        parts.append(table)
    return Group(*parts)


def _identity(values: dict[str, str]) -> str:
    device = f"{values['device']} · " if "device" in values else ""
    return (
        f"{device}{values['model']} ({values['size']}) · {values['backend']} "
        f"{values['variant']} · {values['th']} threads"
    )
