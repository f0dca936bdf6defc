"""The `edgebench` command: one Typer app, one module per command group."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from edgebench import __version__
from edgebench.cli import agent, bench, coordinator, demo, devices, jobs, results
from edgebench.errors import EdgebenchError

app = typer.Typer(
    help="How small language models really run on the hardware you own.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(coordinator.app, name="coordinator")
app.add_typer(agent.app, name="agent")
app.add_typer(jobs.app, name="jobs")
app.add_typer(devices.app, name="devices")
app.add_typer(results.app, name="results")
app.command("bench")(bench.bench)
app.command("demo")(demo.demo)


def _print_version(value: bool) -> None:
    if value:
        print(__version__)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """How small language models really run on the hardware you own."""


@app.command("version")
def version() -> None:
    """Print edgebench's version."""
    print(__version__)


def main() -> None:
    try:
        app()
    except EdgebenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
