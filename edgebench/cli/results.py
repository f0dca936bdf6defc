"""`edgebench results ...`: export stored results."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from edgebench.cli.common import (
    OutFileOption,
    TokenOption,
    UrlOption,
    check_output_format,
    client,
    write_output,
)
from edgebench.dashboard.models import ResultPublic
from edgebench.report import FORMATS, render

app = typer.Typer(help="Export stored results.", no_args_is_help=True)


# Everything a result carries beyond who, what and the stable fields (json, jsonl).
IDENTITY = ("id", "run_id", "job_id", "device_id", "device_name", "model", "created_at")
PROVENANCE = tuple(name for name in ResultPublic.model_fields if name not in (*IDENTITY, "fields"))


def result_rows(results: list[ResultPublic], *, timings: bool) -> list[dict[str, Any]]:
    """Flat rows: identity columns, then the stable fields; with `timings` (json, jsonl)
    also the provenance, the sustained curve and the raw per-token timestamps."""
    rows = []
    for r in results:
        row = {
            "result_id": r.id,
            "job_id": r.job_id,
            "device": r.device_name,
            "model": r.model,
        }
        row.update(r.fields)
        if timings:
            row.update(r.model_dump(mode="json", include=set(PROVENANCE)))
        rows.append(row)
    return rows


@app.command("export")
def export(
    output: Annotated[
        str, typer.Option("--output", "-o", help=f"Output format: {', '.join(FORMATS)}.")
    ] = "csv",
    job: Annotated[
        str | None, typer.Option(help="Only the results of this job (id or unique prefix).")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="Only the results of this device (name or id).")
    ] = None,
    out_file: OutFileOption = None,
    format_alias: Annotated[str | None, typer.Option("--format", "-f", hidden=True)] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Write results as csv (every field), md (the compact table), json or jsonl (every
    field, provenance and the raw token timings)."""
    output = format_alias or output
    check_output_format(output)
    timings = output in ("json", "jsonl")
    results = client(url, token).results(job_id=job, device=device, timings=timings)
    write_output(render(result_rows(results, timings=timings), output), out_file)
