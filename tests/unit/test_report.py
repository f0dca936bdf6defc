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
