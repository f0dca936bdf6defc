"""`edgebench devices ...`: the enrolled fleet."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from edgebench.cli.common import (
    CaOption,
    JsonOption,
    TokenOption,
    UrlOption,
    client,
    err,
    out,
    print_json,
    when,
)
from edgebench.dashboard.models import DevicePublic
from edgebench.report import literal

app = typer.Typer(help="List and inspect enrolled devices.", no_args_is_help=True)


@app.command("list")
def list_devices(
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    ca: CaOption = None,
) -> None:
    """Every enrolled device and whether it is online."""
    devices = client(url, token, ca).devices()
    if as_json:
        print_json([d.model_dump(mode="json") for d in devices])
        return
    table = Table(title="Devices")
    for header in ("Name", "Status", "CPU", "Cores", "RAM GiB", "Arch", "Last seen (UTC)"):
        table.add_column(header)
    table.add_column("Engines")
    for d in devices:
        identity = d.identity
        cells = (
            d.name,
            _state(d),
            identity.cpu_model,
            f"{identity.cpu_cores_physical}/{identity.cpu_cores_logical}",
            f"{identity.ram_bytes / 2**30:.1f}",
            identity.arch,
            when(d.last_seen_at),
            ", ".join(sorted(d.capabilities.engines)) or "none",
        )
        table.add_row(*(literal(cell) for cell in cells))
    out.print(table)


def _state(device: DevicePublic) -> str:
    """Why it takes no work, else whether it is connected."""
    if device.status not in ("idle", "busy", "offline"):
        return device.status
    return "online" if device.online else "offline"


@app.command("show")
def show_device(
    key: Annotated[str, typer.Argument(help="Device name or id.")],
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    ca: CaOption = None,
) -> None:
    """One device: what it is, what it can run, its tags."""
    device = client(url, token, ca).device(key)
    if as_json:
        print_json(device.model_dump(mode="json"))
        return
    seen = when(device.last_seen_at)
    out.print(literal(f"{device.name} · {_state(device)} · last seen {seen} UTC"))
    if device.review:
        out.print(literal(f"{'review':>20}: {device.review}"))
    for label, why in (("unhealthy", device.unhealthy), ("suspended", device.suspended),
                       (device.operator_state, device.operator_note)):  # fmt: skip
        if why and label != "active":
            out.print(literal(f"{label:>20}: {why} (devices resume {device.name})"))
    states = (f"admission {device.admission} · operator {device.operator_state} · "
              f"automatic {', '.join(device.automatic) or 'none'} · {device.liveness}")  # fmt: skip
    out.print(literal(f"{'states':>20}: {states}"))
    if device.admission == "pending":
        out.print(literal(f"{'pending':>20}: devices approve {device.name} (or reject)"))
    out.print(literal(f"{'id':>20}: {device.id}"))
    out.print(literal(f"{'hardware class':>20}: {device.hardware_class}"))
    out.print(literal(f"{'trust tier':>20}: {device.trust_tier}"))
    if device.owner:
        out.print(literal(f"{'owner':>20}: {device.owner}"))
    if device.contributor:
        checks = device.checks or "none yet"
        out.print(literal(f"{'checks':>20}: {checks} (newest first; A agreed, D disputed)"))
    for section, shape in (("identity", device.identity), ("capabilities", device.capabilities)):
        out.print(f"{section}:", highlight=False)
        for name, value in shape.model_dump().items():
            shown = (
                ", ".join(f"{k} {v}" for k, v in value.items())
                if isinstance(value, dict)
                else value
            )
            out.print(literal(f"{name:>20}: {shown if shown != '' else '-'}"))
    tags = ", ".join(f"{k}={v}" for k, v in device.tags.items()) or "-"
    out.print(literal(f"{'tags':>20}: {tags}"))


@app.command("revoke")
def revoke_device(
    key: Annotated[str, typer.Argument(help="Device name or id.")],
    url: UrlOption = None,
    token: TokenOption = None,
    ca: CaOption = None,
) -> None:
    """Refuse a device's agents from now on (a lost or compromised board): its session
    ends within a heartbeat and the run it holds goes back to the queue. It comes back
    only by enrolling again with `coordinator token create --device NAME`."""
    device = client(url, token, ca).revoke_device(key)
    err.print(literal(f"{device.name} revoked: its agents are refused"))


@app.command("remove")
def remove_device(
    key: Annotated[str, typer.Argument(help="Device name or id.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask first.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    ca: CaOption = None,
) -> None:
    """Delete a revoked device for good, with its agents and its results (a board sold or
    a contributor gone); queued runs pinned to it are cancelled. `devices revoke` it
    first. The audit log records it."""
    if not yes and not typer.confirm(f"Delete device {key} and all its results for good?"):
        raise typer.Exit(1)
    removed = client(url, token, ca).remove_device(key)
    err.print(
        literal(
            f"{removed.name} removed with {removed.results_deleted} result(s); "
            f"{removed.runs_cancelled} queued run(s) cancelled"
        )
    )


@app.command("accept")
def accept_hardware(
    key: Annotated[str, typer.Argument(help="Device name or id.")],
    url: UrlOption = None,
    token: TokenOption = None,
    ca: CaOption = None,
) -> None:
    """Accept a device's changed hardware (it is in review since a connection reported
    other hardware than it enrolled with): it takes work again, matched by this hardware."""
    device = client(url, token, ca).accept_hardware(key)
    err.print(literal(f"{device.name} accepted as {device.hardware_class} ({device.status})"))


@app.command("approve")
def approve_device(
    key: Annotated[str, typer.Argument(help="Device name or id.")],
    url: UrlOption = None,
    token: TokenOption = None,
    ca: CaOption = None,
) -> None:
    """Let a pending device take work (a coordinator serving --require-approval)."""
    device = client(url, token, ca).device_action(key, "approve")
    err.print(literal(f"{device.name} approved ({device.status})"))


@app.command("reject")
def reject_device(
    key: Annotated[str, typer.Argument(help="Device name or id.")],
    url: UrlOption = None,
    token: TokenOption = None,
    ca: CaOption = None,
) -> None:
    """Refuse a device for good: its agents are cut off as if revoked."""
    device = client(url, token, ca).device_action(key, "reject")
    err.print(literal(f"{device.name} rejected: its agents are refused"))


ReasonOption = Annotated[str, typer.Option(help="Why (kept with the device's state).")]


@app.command("drain")
def drain_device(
    key: Annotated[str, typer.Argument(help="Device name or id.")],
    reason: ReasonOption = "",
    url: UrlOption = None,
    token: TokenOption = None,
    ca: CaOption = None,
) -> None:
    """Let a device finish the run it holds and take no more (until `devices resume`)."""
    device = client(url, token, ca).device_action(key, "drain", reason)
    held = f"; it finishes run {device.current_run.id[:8]}" if device.current_run else ""
    err.print(literal(f"{device.name} drained{held}"))


@app.command("maintenance")
def maintain_device(
    key: Annotated[str, typer.Argument(help="Device name or id.")],
    reason: ReasonOption = "",
    url: UrlOption = None,
    token: TokenOption = None,
    ca: CaOption = None,
) -> None:
    """Take a device out of service now (a repair): the run it holds goes back to the
    queue and it takes no work until `devices resume`."""
    device = client(url, token, ca).device_action(key, "maintenance", reason)
    err.print(literal(f"{device.name} in maintenance: it takes no work"))


@app.command("resume")
def resume_device(
    key: Annotated[str, typer.Argument(help="Device name or id.")],
    url: UrlOption = None,
    token: TokenOption = None,
    ca: CaOption = None,
) -> None:
    """Let a drained, in-maintenance, unhealthy or suspended device take work again (its
    failure and check histories start afresh)."""
    device = client(url, token, ca).resume_device(key)
    err.print(literal(f"{device.name} takes work again ({device.status})"))
