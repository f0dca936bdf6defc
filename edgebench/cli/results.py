"""`edgebench results ...`: export stored results."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from edgebench.cli.common import TokenOption, UrlOption, client
from edgebench.report import FORMATS, render

app = typer.Typer(help="Export stored results.", no_args_is_help=True)


PROVENANCE = (
    "engine_version",
    "definitions_version",
    "source_sha256",
    "reps_mode",
    "window_s",
    "windows_tps",
    "environment",
    "sensors",
    "rep_timings",
)


def result_rows(results: list[dict[str, Any]], *, timings: bool) -> list[dict[str, Any]]:
    """Flat rows: identity columns, then the stable fields; with `timings` (json, jsonl)
    also the provenance, the sustained curve and the raw per-token timestamps."""
    rows = []
    for r in results:
        row = {"result_id": r["id"], "job_id": r["job_id"], "device": r["device_name"]}
        row.update(r["fields"])
        if timings:
            row.update({key: r.get(key) for key in PROVENANCE})
        rows.append(row)
    return rows


@app.command("export")
def export(
    format: Annotated[
        str, typer.Option("--format", "-f", help=f"One of {', '.join(FORMATS)}.")
    ] = "csv",
    job: Annotated[str | None, typer.Option(help="Only the results of this job id.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to a file, not stdout.")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Write results as csv, md, json or jsonl (json and jsonl carry raw token timings)."""
    if format not in FORMATS:
        raise typer.BadParameter(f"choose one of {', '.join(FORMATS)}", param_hint="--format")
    timings = format in ("json", "jsonl")
    rows = result_rows(client(url, token).results(job_id=job, timings=timings), timings=timings)
    text = render(rows, format)
    if output:
        output.write_text(text)
    else:
        sys.stdout.write(text)
