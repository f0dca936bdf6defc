import csv
import io
import json

import pytest

from edgebench.report import render

ROWS = [{"backend": "llama_cpp", "decode_tps": 12.5, "rep_timings": [{"token_ns": [1, 2]}]}]


def test_every_format_writes_the_same_fields() -> None:
    assert render(ROWS, "md").splitlines()[0] == "| backend | decode_tps |"
    parsed = list(csv.DictReader(io.StringIO(render(ROWS, "csv"))))
    assert parsed == [{"backend": "llama_cpp", "decode_tps": "12.5"}]
    assert json.loads(render(ROWS, "json")) == ROWS  # raw timings only in json/jsonl
    assert [json.loads(line) for line in render(ROWS, "jsonl").splitlines()] == ROWS


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        render(ROWS, "xml")


def test_summary_table_shows_unknown_as_a_dash_not_zero() -> None:
    from rich.console import Console

    from edgebench.report import summary_table

    row = {"device": "pi", "variant": "Q4_0", "n_prompt": 64, "n_gen": 64, "ttft_ms": 12.0,
           "ttft_ms_std": 0.5, "decode_tps": 8.25, "decode_j_per_token": None,
           "temp_max_c": 61.5}  # fmt: skip
    console = Console(width=200, record=True)
    console.print(summary_table([row]))
    text = console.export_text()
    assert "12.00 ± 0.50" in text and "61.5" in text
    line = next(line for line in text.splitlines() if "pi" in line)
    assert " - " in line.replace("│", " ") and "0.0000" not in line
