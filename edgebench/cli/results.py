"""`edgebench results ...`: export stored results."""

from __future__ import annotations

from typing import Annotated

import typer

from edgebench.cli.common import (
    CaOption,
    OutFileOption,
    TokenOption,
    UrlOption,
    check_output_format,
    client,
    err,
    write_output,
)
from edgebench.report import FORMATS, literal, render

app = typer.Typer(help="Export or delete stored results.", no_args_is_help=True)


@app.command("delete")
def delete(
    key: Annotated[str, typer.Argument(help="Result id or a unique prefix of 4+ characters.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask first.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    ca: CaOption = None,
) -> None:
    """Delete one result for good (a bad run, a forged figure); its leaderboard row is
    counted again from the results left. The audit log records it."""
    if not yes and not typer.confirm(f"Delete result {key} for good?"):
        raise typer.Exit(1)
    deleted = client(url, token, ca).delete_result(key)
    err.print(literal(f"result {deleted[:8]} deleted"))


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
    ca: CaOption = None,
) -> None:
    """Write results as csv (every field), md (the compact table), json or jsonl (every
    field, provenance and the raw token timings)."""
    output = format_alias or output
    check_output_format(output)
    detail = output in ("json", "jsonl")
    rows = client(url, token, ca).result_rows(job_id=job, device=device, detail=detail)
    write_output(render(rows, output), out_file)
