import csv
import io
import json

import pytest

from edgebench.report import render

ROWS = [{"backend": "llama_cpp", "decode_tps": 12.5, "rep_timings": [{"token_ns": [1, 2]}]}]


def test_every_machine_format_writes_every_field() -> None:
    parsed = list(csv.DictReader(io.StringIO(render(ROWS, "csv"))))
    assert parsed == [{"backend": "llama_cpp", "decode_tps": "12.5"}]
    assert json.loads(render(ROWS, "json")) == ROWS  # raw timings only in json/jsonl
    assert [json.loads(line) for line in render(ROWS, "jsonl").splitlines()] == ROWS


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        render(ROWS, "xml")


RESULT = {
    "model": "qwen2.5-0.5b-instruct-q4_k_m.gguf", "model_size_mb": 379.4,
    "backend": "llama_cpp", "variant": "Q4_K_M", "threads": 4, "n_depth": 512,
    "n_prompt": 64, "n_gen": 128, "ttft_ms": 123.456, "prefill_tps": 517.51,
    "prefill_tps_ci95": 12.34, "decode_tps": 21.07, "decode_tps_ci95": 0.42,
    "prefill_j_per_token": 0.0123, "decode_j_per_token": None, "noisy": True,
}  # fmt: skip


def test_markdown_is_compact_two_lines_per_result_within_80_columns() -> None:
    kitchen = {"device": "raspberrypi-5-kitchen", **RESULT}
    text = render([kitchen, {**kitchen, "noisy": False}], "md")
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), [len(line) for line in lines]
    assert (
        lines[0]
        == "**raspberr… · qwen2.5-0.5b-instruct-q… (379.4M) · llama_cpp Q4_K_M · 4 threads**"
    )
    assert lines[2] == "| test | t/s | TTFT ms | J/tok | noisy |"
    assert lines[4] == "| pp64 @ d512 | 517.5±12.3 | 123.5 | 0.0123 | yes |"
    assert lines[5] == "| tg128 @ d512 | 21.1±0.4 |  | - | yes |"  # no sensor: '-', never 0
    assert lines[7].endswith("|  |")  # a quiet result carries no mark


def test_a_long_model_name_is_cut_to_keep_the_title_within_80_columns() -> None:
    long = {**RESULT, "device": "d" * 30, "model": "m" * 90 + ".gguf"}
    title = render([long], "md").splitlines()[0]
    assert len(title) <= 80 and "…" in title and title.endswith("4 threads**")


def test_the_mark_column_appears_only_when_a_result_is_noisy() -> None:
    quiet = {**RESULT, "model": "tinyllama-q4_0.gguf", "n_depth": 0, "noisy": False}
    lines = render([quiet], "md").splitlines()
    assert "noisy" not in lines[2] and lines[5] == "| tg128 | 21.1±0.4 |  | - |"


def test_summary_table_is_the_compact_view_with_the_device() -> None:
    from rich.console import Console

    from edgebench.report import summary_table

    console = Console(width=200, record=True)
    console.print(summary_table([{"device": "pi", **RESULT}]))
    text = console.export_text()
    assert (
        text.splitlines()[1]
        == "pi · qwen2.5-0.5b-instruct-q4_k_m (379.4M) · llama_cpp Q4_K_M · 4 threads"
    )
    assert "517.5±12.3" in text and "noisy" in text
    line = next(line for line in text.splitlines() if "tg128" in line)
    assert " - " in line.replace("│", " ") and "0.0000" not in line


def test_the_cli_table_keeps_every_figure_whole_at_80_columns() -> None:
    from rich.console import Console

    from edgebench.report import summary_table

    console = Console(width=80, record=True)
    console.print(summary_table([{"device": "raspberrypi-5", **RESULT}]))
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    for figure in ("517.5±12.3", "21.1±0.4", "123.5", "0.0123", "pp64 @ d512", "Q4_K_M"):
        assert figure in text, figure
