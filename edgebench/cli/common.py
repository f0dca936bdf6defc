"""Options and helpers shared by the command groups."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from edgebench.cli.client import CoordinatorClient

# Piped output keeps whole table rows instead of wrapping at 80 columns.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=True)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url", help="Coordinator HTTP URL [env: EDGEBENCH_URL; default http://127.0.0.1:8080]"
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token", help="Admin token [env: EDGEBENCH_TOKEN; else the local coordinator's]"
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

# Engine settings shared by `bench` and `jobs submit`.
CtxSizeOption = Annotated[
    int,
    typer.Option(
        "--ctx-size",
        "-c",
        min=0,
        help="Context size in tokens (0: the largest test's depth + prompt + generation, "
        "rounded up to 256).",
    ),
]
BatchSizeOption = Annotated[
    int, typer.Option("--batch-size", "-b", min=1, help="llama.cpp logical batch.")
]
UBatchSizeOption = Annotated[
    int, typer.Option("--ubatch-size", "-ub", min=1, help="llama.cpp physical batch.")
]
GpuLayersOption = Annotated[
    int, typer.Option("--n-gpu-layers", "-ngl", help="llama.cpp layers on the GPU (-1: all).")
]
FlashAttnOption = Annotated[
    bool, typer.Option("--flash-attn/--no-flash-attn", help="llama.cpp flash attention.")
]


def client(url: str | None, token: str | None) -> CoordinatorClient:
    return CoordinatorClient(url, token)


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
