"""`edgebench devices ...`: the enrolled fleet."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from edgebench.cli.common import JsonOption, TokenOption, UrlOption, client, out, print_json

app = typer.Typer(help="List and inspect enrolled devices.", no_args_is_help=True)


@app.command("list")
def list_devices(
    as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None
) -> None:
    """Every enrolled device and whether it is online."""
    devices = client(url, token).devices()
    if as_json:
        print_json(devices)
        return
    table = Table(title="Devices")
    for header in ("Name", "Status", "CPU", "Cores", "RAM GiB", "Arch", "Last seen (UTC)"):
        table.add_column(header)
    for d in devices:
        table.add_row(
            d["name"],
            "online" if d["online"] else "offline",
            d["cpu_model"],
            f"{d['cpu_cores_physical']}/{d['cpu_cores_logical']}",
            f"{d['ram_bytes'] / 2**30:.1f}",
            d["arch"],
            (d["last_seen_at"] or "never")[:19],
        )
    out.print(table)


@app.command("show")
def show_device(
    key: Annotated[str, typer.Argument(help="Device name or id.")],
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """One device's hardware snapshot."""
    device = client(url, token).device(key)
    if as_json:
        print_json(device)
        return
    for key_name, value in device.items():
        out.print(f"{key_name:>20}: {value}", highlight=False)
