"""Options and helpers shared by the command groups."""

from __future__ import annotations

import importlib
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edgebench.cli.client import CoordinatorClient
from edgebench.errors import EdgebenchError
from edgebench.report import FORMATS

# Piped output keeps whole table rows instead of wrapping at 80 columns.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=True)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="EDGEBENCH_URL",
        show_envvar=True,
        show_default="http://127.0.0.1:8080",
        help="Coordinator HTTP URL.",
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="EDGEBENCH_TOKEN",
        show_envvar=True,
        show_default="the token a local coordinator saved",
        help="Admin token.",
    ),
]
CaOption = Annotated[
    Path | None,
    typer.Option(
        "--ca",
        envvar="EDGEBENCH_CA",
        show_envvar=True,
        show_default="the local coordinator's CA, then the system's",
        help="CA certificate to verify an https:// coordinator with (`coordinator ca`).",
        dir_okay=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

OutputOption = Annotated[
    str, typer.Option("--output", "-o", help=f"Output format: {', '.join(FORMATS)}.")
]
OutFileOption = Annotated[
    Path | None, typer.Option("--out", help="Write to this file instead of stdout.")
]


def check_output_format(output: str) -> None:
    if output in FORMATS:
        return
    hint = ""
    if "." in output or "/" in output:  # -o used to take a file in `results export`
        hint = f"; -o is the output format, write to a file with --out {output}"
    raise typer.BadParameter(f"choose one of {', '.join(FORMATS)}{hint}", param_hint="--output")


def write_output(text: str, out_file: Path | None) -> None:
    if out_file is None:
        sys.stdout.write(text)
        return
    out_file.write_text(text)
    err.print(f"wrote {out_file}", highlight=False)


# What each install extra brings that a command imports (pyproject.toml lists the rest).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "coordinator": ("grpc", "fastapi", "uvicorn", "sqlmodel", "alembic", "jinja2"),
    "agent": ("grpc", "psutil"),
    "llama": ("llama_cpp", "gguf", "numpy"),
}


def require_extras(command: str, *extras: str) -> None:
    """Fails with the pip command to run when an extra `command` needs is not installed."""
    for extra in extras:
        for module in EXTRA_MODULES[extra]:
            try:
                importlib.import_module(module)
            except ImportError:
                needed = ",".join(extras)
                raise EdgebenchError(
                    f"{command} needs the {extra} extra ({module} is not installed): "
                    f"pip install 'edgebench[{needed}]'"
                ) from None


def client(url: str | None, token: str | None, ca: Path | None = None) -> CoordinatorClient:
    return CoordinatorClient(url, token, ca)


def when(moment: datetime | None, missing: str = "never") -> str:
    """A stored UTC time as the human tables show it."""
    return f"{moment:%Y-%m-%d %H:%M:%S}" if moment else missing


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def parse_tags(values: list[str] | None) -> dict[str, str]:
    tags = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"tag {item!r} must look like key=value")
        tags[key] = value
    return tags


def parse_duration(text: str) -> int:
    """'90s', '30m', '12h', '7d' or plain seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a duration like 90s, 30m, 12h or 7d") from None
