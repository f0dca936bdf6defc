"""`edgebench agent ...`: enroll this device and run its agent."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import psutil
import typer
from rich.table import Table

from edgebench.cli.common import err, out, parse_duration, parse_tags, print_json
from edgebench.report import literal
from edgebench.tls import pem_fingerprint, refuse_plaintext, split_token

app = typer.Typer(help="Enroll this device and run its agent.", no_args_is_help=True)


def _discovered(name: str, trusted: str | None, insecure: bool, interface: str) -> str:
    from edgebench.discovery import discover

    found = discover(name=name or None, trusted=trusted, insecure=insecure, interface=interface)
    err.print(literal(f"found coordinator {found.instance} at {found.address} "
                      f"(edgebench {found.version})"))  # fmt: skip
    return found.address


def grpc_address(text: str | None) -> str | None:
    """HOST:PORT as agents dial it; a URL is the dashboard's address, not this one."""
    if text and "://" in text:
        raise typer.BadParameter(
            f"{text!r} is a URL: the agent wants the coordinator's gRPC address as HOST:PORT "
            "without a scheme (e.g. 192.168.1.10:50051; 8080 is the dashboard's port)"
        )
    return text


InsecureOption = Annotated[
    bool,
    typer.Option(
        "--insecure",
        help="Allow plaintext to a coordinator beyond loopback (it serves --insecure): "
        "anyone on the path reads the token and the agent's secret.",
    ),
]


DiscoverOption = Annotated[
    bool,
    typer.Option(
        "--discover",
        help="Find the coordinator on the LAN over mDNS (one serving --advertise): the "
        "first that this agent may trust (--discover-name: that instance). Its CA must be "
        "the one the token (or the saved credential) names.",
    ),
]
DiscoverNameOption = Annotated[
    str, typer.Option(help="With --discover: only the instance of this name.")
]


MdnsInterfaceOption = Annotated[
    str,
    typer.Option(
        help="With --discover: look on the interface with this address only.",
        show_default="every interface",
    ),
]


def _where(coordinator: str | None, discover: bool) -> None:
    if coordinator and discover:
        raise typer.BadParameter("give --coordinator or --discover, not both")
    if not coordinator and not discover:
        raise typer.BadParameter(
            "give the coordinator's address (--coordinator HOST:PORT) or --discover"
        )


@app.command()
def enroll(
    token: Annotated[
        str, typer.Option(help="One-time token from `edgebench coordinator token create`.")
    ],
    coordinator: Annotated[
        str | None,
        typer.Option(
            help="The coordinator's gRPC address, HOST:PORT (no http://).", callback=grpc_address
        ),
    ] = None,
    discover: DiscoverOption = False,
    discover_name: DiscoverNameOption = "",
    mdns_interface: MdnsInterfaceOption = "",
    name: Annotated[str, typer.Option(help="Device name.", show_default="the hostname")] = "",
    tag: Annotated[list[str] | None, typer.Option(help="A key=value tag; repeat for more.")] = None,
    ca: Annotated[
        Path | None,
        typer.Option(
            help="The coordinator's CA certificate, for a coordinator serving certificates "
            "of its own (--tls-cert); its own CA is found through the token.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    insecure: InsecureOption = False,
) -> None:
    """Trade a one-time token for this agent's credential (saved with mode 0600). The
    token names the coordinator's TLS authority, which is pinned from then on."""
    from edgebench.agent import credentials
    from edgebench.agent.enroll import enroll as do_enroll

    _where(coordinator, discover)
    if discover:
        coordinator = _discovered(discover_name, split_token(token)[1], insecure, mdns_interface)
    assert coordinator is not None
    credential = do_enroll(
        coordinator,
        token,
        name=name,
        tags=parse_tags(tag),
        insecure=insecure,
        authority_file=ca,
    )
    path = credentials.save(credential)
    how = "TLS, CA pinned" if credential.authority_pem else "plaintext"
    err.print(f"enrolled as {credential.device_name} ({how}); credential saved to {path}")


@app.command()
def rotate(insecure: InsecureOption = False) -> None:
    """Replace this agent's secret with a new one (the coordinator forgets the old one at
    once; a copy of the old credential anywhere else stops working)."""
    from edgebench.agent import credentials
    from edgebench.agent.enroll import rotate as do_rotate

    rotated = do_rotate(credentials.load(), insecure=insecure)
    path = credentials.save(rotated)
    err.print(f"{rotated.device_name} has a new secret; credential saved to {path}")


@app.command()
def run(
    coordinator: Annotated[
        str | None, typer.Option(help="Override the enrolled HOST:PORT.", callback=grpc_address)
    ] = None,
    discover: DiscoverOption = False,
    discover_name: DiscoverNameOption = "",
    mdns_interface: MdnsInterfaceOption = "",
    outbox_limit: Annotated[
        int,
        typer.Option(
            min=1,
            help="Take no new runs while this many results wait for the coordinator's "
            "acknowledgement (results are never dropped).",
        ),
    ] = 1000,
    cache_max_gb: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Keep the model cache within this many GiB: the least recently used "
            "models are evicted first.",
        ),
    ] = 20.0,
    run_memory_gb: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            help="Stop a run whose engine process uses more memory than this many GiB (the "
            "run fails with the reason; the agent keeps serving).",
            show_default="90% of this machine's memory",
        ),
    ] = None,
    run_timeout: Annotated[
        str,
        typer.Option(help="Stop a run that takes longer than this (90s, 30m, 3h...)."),
    ] = "3h",
    only_when: Annotated[
        list[str] | None,
        typer.Option(
            help="Take work only while this holds (a donated machine's terms): idle, ac, "
            "temp<60C or hours=22-07; repeat: all must hold. A run already started goes on.",
            show_default="always",
        ),
    ] = None,
    nice: Annotated[
        int,
        typer.Option(
            min=0,
            max=19,
            help="Niceness of the agent's control process (downloads, messages), so the "
            "owner's work goes first; the measuring process runs at 0 where it may.",
        ),
    ] = 5,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every message.")] = False,
    insecure: InsecureOption = False,
) -> None:
    """Connect to the coordinator and run benchmarks as they come, until Ctrl-C."""
    from edgebench.agent import conditions, credentials
    from edgebench.agent.conditions import Conditions
    from edgebench.agent.isolation import RunLimits
    from edgebench.agent.session import Agent

    seconds = parse_duration(run_timeout)
    if nice:
        os.setpriority(os.PRIO_PROCESS, 0, max(nice, os.getpriority(os.PRIO_PROCESS, 0)))
    try:
        terms = Conditions([conditions.parse(text) for text in only_when]) if only_when else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--only-when") from None
    memory = run_memory_gb * 1024**3 if run_memory_gb else 0.9 * psutil.virtual_memory().total
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
    )
    credential = credentials.load()
    if coordinator and discover:
        raise typer.BadParameter("give --coordinator or --discover, not both")
    if discover:
        pinned = pem_fingerprint(credential.authority_pem) if credential.authority_pem else None
        coordinator = _discovered(discover_name, pinned, insecure, mdns_interface)
    if coordinator:
        credential = replace(credential, coordinator=coordinator)
    if not credential.authority_pem:
        refuse_plaintext(credential.coordinator, insecure)
    agent = Agent(
        credential,
        outbox_limit=outbox_limit,
        insecure=insecure,
        cache_max_bytes=int(cache_max_gb * 1024**3),
        run_limits=RunLimits(memory_bytes=int(memory), seconds=float(seconds)),
        only_when=terms,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await agent.run_forever(stop)

    err.print(f"agent {credential.device_name} connecting to {credential.coordinator}")
    asyncio.run(main())


@app.command()
def probe(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    sysfs_root: Annotated[
        Path, typer.Option(help="Where sysfs is (like node_exporter's --path.sysfs).")
    ] = Path("/sys"),
    procfs_root: Annotated[Path, typer.Option(help="Where procfs is.")] = Path("/proc"),
) -> None:
    """Show the platform and every sensor found, with one reading each (what cannot be
    read is listed as missing with the reason). Platform tools are found on PATH."""
    from edgebench.agent.sensors import Roots, detect_sources, platform_of

    roots = Roots(sysfs=sysfs_root, procfs=procfs_root)
    sources = detect_sources(roots)
    readings = [reading for source in sources for reading in source.read()]
    report = {
        "platform": platform_of(sources),
        "sensors": [reading.to_dict() for reading in readings],
    }
    if as_json:
        print_json(report)
        return
    out.print(f"platform: {report['platform']}", highlight=False)
    table = Table(title="Sensors")
    for header in ("Source", "Kind", "Name", "Scope", "Value", "Status"):
        table.add_column(header)
    for r in readings:
        value = "" if r.value is None else f"{r.value:.3f} {r.unit}".strip()
        if r.flags:
            value += " " + ",".join(name for name, on in r.flags.items() if on)
        status = r.status if r.status == "ok" else f"{r.status}: {r.reason}"
        table.add_row(r.source, r.kind, r.name, r.scope, value, status)
    if not readings:
        out.print("no sensors found: energy, power and temperature will be reported missing")
    else:
        out.print(table)


UserUnitOption = Annotated[
    bool,
    typer.Option(
        "--user",
        help="A unit in your own systemd manager (no root; starts at login unless "
        "`loginctl enable-linger`; no RAPL energy helper).",
    ),
]


@app.command()
def install(
    user: UserUnitOption = False,
    coordinator: Annotated[
        str | None,
        typer.Option(help="Enroll first at this HOST:PORT (with --token).", callback=grpc_address),
    ] = None,
    token: Annotated[str | None, typer.Option(help="Enroll first with this token.")] = None,
    name: Annotated[str, typer.Option(help="Device name when enrolling.")] = "",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the unit(s) and change nothing.")
    ] = False,
    insecure: InsecureOption = False,
) -> None:
    """Run the agent as a systemd service: enrolls if asked (or not yet enrolled), writes
    a hardened unit (Type=notify with a watchdog, Restart=on-failure, ProtectSystem=
    strict), enables and starts it. A system unit needs root and runs the agent as you."""
    from edgebench.agent import credentials
    from edgebench.agent import service as units

    plan = units.this_install(user)
    if dry_run:
        print(units.agent_unit(plan), end="")
        if not user:
            print(f"# {units.SENSORS_UNIT}\n" + units.sensors_unit(plan), end="")
        return
    if not units.has_systemd(user):
        err.print(literal(
            "no systemd manager here: run the agent yourself (for example under your init "
            f"system or in a terminal): {plan.executable} -m edgebench agent run"
        ))  # fmt: skip
        raise typer.Exit(1)
    if coordinator and token:
        from edgebench.agent.enroll import enroll as do_enroll

        credentials.save(do_enroll(coordinator, token, name=name, tags={}, insecure=insecure))
    elif not credentials.credential_path().exists():
        raise typer.BadParameter("not enrolled yet: give --coordinator HOST:PORT and --token T")
    written = units.install(plan)
    for path in written:
        err.print(literal(f"wrote {path}"))
    where = "--user " if user else ""
    err.print(literal(f"{units.UNIT} enabled and started (systemctl {where}status {units.UNIT})"))


@app.command()
def uninstall(user: UserUnitOption = False) -> None:
    """Stop the agent's service and remove its unit(s); the credential and cache stay."""
    from edgebench.agent import service as units

    for path in units.uninstall(user):
        err.print(literal(f"removed {path}"))


@app.command("status")
def agent_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """This device's agent: whether it runs and is connected, its version, the run it
    holds, its outbox depth and cache size, its last error, and where its log is."""
    from edgebench import __version__, paths
    from edgebench.agent import credentials, status
    from edgebench.agent import service as units
    from edgebench.agent.outbox import Outbox

    said = status.read()
    running = status.alive(said.get("pid")) and said.get("state") != "stopped"
    outbox_file = paths.data_dir() / "outbox.sqlite"
    outbox = len(Outbox(outbox_file)) if outbox_file.exists() else 0
    user_unit = Path.home() / ".config/systemd/user" / units.UNIT
    if user_unit.exists() or (units.SYSTEM_DIR / units.UNIT).exists():
        user = "--user " if user_unit.exists() else ""
        log_at = f"journalctl {user}-u {units.UNIT}"
    else:
        log_at = "the terminal that runs `edgebench agent run` (not installed as a service)"
    report = {
        "enrolled": credentials.credential_path().exists(),
        "running": running,
        "state": said.get("state", "never started") if running else "not running",
        "coordinator": said.get("coordinator"),
        "device": said.get("device"),
        "version": said.get("version", __version__),
        "run": said.get("run") if running else None,
        "outbox_results": outbox,
        "cache_bytes": status.folder_bytes(paths.cache_dir()),
        "last_error": said.get("last_error"),
        "updated_at": said.get("updated_at"),
        "log": log_at,
    }
    if as_json:
        print_json(report)
        return
    for name, value in report.items():
        shown = f"{value / 2**20:.1f} MiB" if name == "cache_bytes" else value
        out.print(literal(f"{name.replace('_', ' '):>15}: {'-' if shown is None else shown}"))
