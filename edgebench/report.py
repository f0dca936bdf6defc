"""Printers for result rows, one per output format (llama-bench style). Every format
writes the same fields in the same order."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

FORMATS = ("md", "csv", "json", "jsonl")

Row = dict[str, Any]


def _columns(rows: Sequence[Row]) -> list[str]:
    return [key for key in rows[0] if key != "rep_timings"] if rows else []


def to_markdown(rows: Sequence[Row]) -> str:
    """The compact view (llama-bench's columns): per device, model, variant and thread
    count a line naming them, then its tests, two lines each (prefill, decode); every
    line fits 80 columns. csv, json and jsonl carry every field."""
    out = []
    for block in grouped(rows):
        out.append(f"**{block.title}**\n")
        out.append("| " + " | ".join(block.header) + " |")
        out.append("|" + "|".join("--:" if h in _RIGHT else "---" for h in block.header) + "|")
        out += ["| " + " | ".join(cells) + " |" for cells in block.lines]
        out.append("")
    return "\n".join(out)


# A spreadsheet runs a cell that begins with one of these as a formula; names, tags and
# file names are user text, so such a text cell gets a leading apostrophe.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def csv_chunks(rows: Iterable[Row], columns: Sequence[str] | None = None) -> Iterator[str]:
    """CSV text a few rows at a time (exports stream it); the columns are the first
    row's unless given."""
    out = io.StringIO()
    writer: csv.DictWriter[str] | None = None
    for row in rows:
        if writer is None:
            names = list(columns) if columns else [k for k in row if k != "rep_timings"]
            writer = csv.DictWriter(out, names, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
        writer.writerow({key: csv_cell(value) for key, value in row.items()})
        if out.tell() > 64 * 1024:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    if writer is None and columns:
        yield ",".join(columns) + "\n"
    yield out.getvalue()


def json_chunks(rows: Iterable[Row]) -> Iterator[str]:
    """A JSON array, one row per line, a row at a time."""
    yield "["
    for index, row in enumerate(rows):
        yield ("\n" if index == 0 else ",\n") + json.dumps(row, default=str)
    yield "\n]\n"


def jsonl_chunks(rows: Iterable[Row]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row, default=str) + "\n"


def to_csv(rows: Sequence[Row]) -> str:
    return "".join(csv_chunks(rows))


def to_json(rows: Sequence[Row]) -> str:
    return json.dumps(list(rows), indent=2) + "\n"


def to_jsonl(rows: Sequence[Row]) -> str:
    return "".join(jsonl_chunks(rows))


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


TITLE_WIDTH = 80  # a block's title line; longer names are cut (csv/json keep them)
MODEL_ROOM = 24
_RIGHT = {"t/s", "TTFT ms", "J/tok"}


@dataclass(frozen=True)
class Block:
    """The results of one device, model, variant and thread count."""

    title: str  # device · model (size) · backend variant · N threads
    header: list[str]
    lines: list[list[str]] = field(default_factory=list)


def grouped(rows: Sequence[Row]) -> list[Block]:
    """The compact view: blocks of two lines per result (the prefill `pp` with TTFT, the
    decode `tg`), each with tok/s and its 95% interval, joules per token and, where any
    result was disturbed, a `noisy` mark. Unknown values (no sensor) are '-', never 0."""
    with_mark = any(row.get("noisy") for row in rows)
    with_check = any(row.get("verification", "trusted") != "trusted" for row in rows)
    header = ["test", "t/s", "TTFT ms", "J/tok"] + (["noisy"] if with_mark else [])
    header += ["check"] if with_check else []
    blocks: dict[str, Block] = {}
    for row in rows:
        title = _title(row)
        block = blocks.setdefault(title, Block(title, header))
        block.lines.extend(_phase_lines(row, with_mark, with_check))
    return list(blocks.values())


def _check(row: Row) -> str:
    """A contributor's result: where its verification stands, short."""
    state = str(row.get("verification", "trusted"))
    return "" if state == "trusted" else "quorum" if state == "verified-by-quorum" else state


def _phase_lines(row: Row, with_mark: bool, with_check: bool = False) -> list[list[str]]:
    depth = f" @ d{row['n_depth']}" if row.get("n_depth") else ""
    mark = ["yes" if row.get("noisy") else ""] if with_mark else []
    mark += [_check(row)] if with_check else []
    lines = []
    for phase, count, tps, joules, ttft in (
        ("pp", "n_prompt", "prefill_tps", "prefill_j_per_token", _num(row.get("ttft_ms"), 1)),
        ("tg", "n_gen", "decode_tps", "decode_j_per_token", ""),
    ):
        speed = _num(row.get(tps), 1)
        if row.get(f"{tps}_ci95") is not None and row.get(tps) is not None:
            speed += f"±{row[f'{tps}_ci95']:.1f}"
        test = f"{phase}{row.get(count, '')}{depth}"
        lines.append([test, speed, ttft, _num(row.get(joules), 4), *mark])
    return lines


def _title(row: Row) -> str:
    """device · model (size) · backend variant · N threads, cut to TITLE_WIDTH: the model
    keeps at least MODEL_ROOM characters, the device what is left."""
    rest = (
        f" ({_size(row.get('model_size_mb'))}) · {row.get('backend', '')} "
        f"{row.get('variant', '')} · {row.get('threads', '')} threads"
    )
    model = str(row.get("model") or str(row.get("model_sha256", ""))[:12]).removesuffix(".gguf")
    device = str(row.get("device") or "")
    budget = TITLE_WIDTH - 4 - len(rest)  # 4: the ** around it in markdown
    if device:
        budget -= 3  # " · "
    if len(device) + len(model) > budget:
        model = _cut(model, max(MODEL_ROOM, budget - len(device)))
        device = _cut(device, max(8, budget - len(model)))
    return (f"{device} · " if device else "") + model + rest


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _size(mib: Any) -> str:
    if not isinstance(mib, (int, float)):
        return "-"
    return f"{mib / 1024:.2f}G" if mib >= 1024 else f"{mib:.1f}M"


def _num(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# C0 and C1 control characters (but tab) and DEL, shown as escapes: text from agents
# and the network must not move a terminal's cursor, set its title or open links.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x09), *range(0x0A, 0x20), *range(0x7F, 0xA0))}


def literal(value: object, style: str = "") -> Text:
    """Text for a terminal, shown exactly: no rich markup, control characters escaped."""
    return Text(str(value).translate(_CONTROLS), style=style)


def summary_table(rows: Sequence[Row], title: str = "Results") -> Group:
    """The human table: the compact view, a small table per block under its title, so
    that it stays whole at 80 columns."""
    parts: list[Text | Table] = [literal(title, style="bold")] if rows else []
    for block in grouped(rows):
        parts.append(literal(block.title, style="cyan"))
        table = Table()
        for name in block.header:
            table.add_column(name, justify="right" if name in _RIGHT else "left", no_wrap=True)
        for line in block.lines:
            table.add_row(*(literal(cell) for cell in line))
        parts.append(table)
    return Group(*parts)
