"""Printers for result rows, one per output format (llama-bench style). Every format
writes the same fields in the same order."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from typing import Any

from rich.table import Table

FORMATS = ("md", "csv", "json", "jsonl")

Row = dict[str, Any]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def _columns(rows: Sequence[Row]) -> list[str]:
    return [key for key in rows[0] if key != "rep_timings"] if rows else []


def to_markdown(rows: Sequence[Row]) -> str:
    columns = _columns(rows)
    if not columns:
        return ""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in rows]
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


SUMMARY_COLUMNS = (
    ("device", "Device", ""),
    ("variant", "Variant", ""),
    ("n_prompt", "Prompt", ""),
    ("n_gen", "Gen", ""),
    ("ttft_ms", "TTFT ms", ".2f"),
    ("prefill_tps", "Prefill tok/s", ".1f"),
    ("decode_tps", "Decode tok/s", ".1f"),
    ("itl_p50_ms", "ITL p50 ms", ".3f"),
    ("itl_p99_ms", "ITL p99 ms", ".3f"),
    ("peak_rss_mb", "Peak RSS MiB", ".1f"),
    ("decode_j_per_token", "Decode J/tok", ".4f"),
    ("temp_max_c", "Temp max C", ".1f"),
)


def summary_table(rows: Sequence[Row], title: str = "Results") -> Table:
    """The human table: the figures people look at first, with ± std where there is one."""
    table = Table(title=title)
    present = [c for c in SUMMARY_COLUMNS if rows and c[0] in rows[0]]
    for _, header, spec in present:
        table.add_column(header, justify="right" if spec else "left")
    for row in rows:
        cells = []
        for key, _, spec in present:
            value = row[key]
            if value is None:  # unknown (no sensor), which is not zero
                cells.append("-")
                continue
            text = format(value, spec) if spec else str(value)
            std = row.get(f"{key}_std")
            if spec and isinstance(std, float):
                text += f" ± {std:{spec}}"
            cells.append(text)
        table.add_row(*cells)
    return table
