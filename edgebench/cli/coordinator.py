"""`edgebench coordinator ...`: run the coordinator and manage enrollment tokens."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path
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
    parse_duration,
    print_json,
    require_extras,
    when,
)
from edgebench.protocol import NAME_RE
from edgebench.report import literal

app = typer.Typer(help="Run the coordinator and manage enrollment tokens.", no_args_is_help=True)
token_app = typer.Typer(
    help="Enrollment tokens for new agents, and viewer tokens for people.", no_args_is_help=True
)
app.add_typer(token_app, name="token")


def _instance_name(given: str) -> str:
    """An mDNS instance name: the one given, else the host name."""
    name = given.strip() or socket.gethostname().split(".")[0]
    if not NAME_RE.match(name):
        raise typer.BadParameter(
            "1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
            param_hint="--advertise-name",
        )
    return name


@app.command()
def serve(
    db: Annotated[
        str | None,
        typer.Option(
            envvar="EDGEBENCH_DB",
            show_envvar=True,
            help="SQLAlchemy database URL (postgresql+psycopg://USER:PASSWORD@HOST/DB).",
            show_default="SQLite in the data dir",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    grpc_port: Annotated[
        int, typer.Option(help="Port agents connect to (0 = any free port).")
    ] = 50051,
    http_port: Annotated[
        int, typer.Option(help="Port of the dashboard and API (0 = any free port).")
    ] = 8080,
    lease_seconds: Annotated[
        int, typer.Option(min=5, help="How long a lease lives without a heartbeat.")
    ] = 60,
    artifact_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where model files are kept. Coordinators sharing a database must share "
            "this folder too.",
            show_default="in the data dir",
        ),
    ] = None,
    reap_seconds: Annotated[
        int,
        typer.Option(
            min=1, help="How often expired leases are reaped and contributor results checked."
        ),
    ] = 10,
    advertise: Annotated[
        bool,
        typer.Option(
            "--advertise",
            help="Announce the agent port on the LAN over mDNS (_edgebench._tcp) with the "
            "version and the CA fingerprint; agents find it with `agent enroll --discover`.",
        ),
    ] = False,
    advertise_name: Annotated[
        str,
        typer.Option(help="With --advertise: the instance name.", show_default="the host name"),
    ] = "",
    require_approval: Annotated[
        bool,
        typer.Option(
            "--require-approval",
            help="A newly enrolled device waits as pending (no work) until `edgebench "
            "devices approve NAME`, or is refused with `devices reject NAME`.",
        ),
    ] = False,
    verify_band: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=10.0,
            help="A contributor's result and its replication agree when each compared "
            "figure is within max(this share of the trusted figure, the combined 95% "
            "intervals).",
        ),
    ] = 0.05,
    http_workers: Annotated[
        int,
        typer.Option(
            min=0,
            max=64,
            help="Serve the dashboard and API from this many processes of their own, so "
            "that heavy reads never delay the agents (worth it from a few hundred agents; "
            "each process holds its own ~100 MB). 0 = in the coordinator's process.",
        ),
    ] = 0,
    admin_token: Annotated[
        str | None,
        typer.Option(
            envvar="EDGEBENCH_TOKEN",
            help="Admin token to use instead of a generated one.",
            show_envvar=True,
        ),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Serve agents in plaintext (no TLS): tokens and agent secrets cross the "
            "network readable. Only for a network you trust entirely.",
        ),
    ] = False,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            help="Your own certificate chain (PEM) instead of the coordinator's own CA; "
            "agents then enroll with --ca YOUR_CA.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(help="The key of --tls-cert (PEM).", exists=True, dir_okay=False),
    ] = None,
    tls_name: Annotated[
        list[str] | None,
        typer.Option(
            help="Another name or address agents reach this coordinator by (beyond the "
            "hostname, hostname.local and the bound addresses); repeat for more.",
        ),
    ] = None,
    https: Annotated[
        bool | None,
        typer.Option(
            "--https/--no-https",
            help="Serve the dashboard over HTTPS with the same certificate.",
            show_default="when bound beyond loopback",
        ),
    ] = None,
    public: Annotated[
        bool,
        typer.Option(
            "--public",
            help="Anyone who reaches the dashboard and API may read them (a public "
            "leaderboard), even beyond loopback. Writes still need the admin token.",
        ),
    ] = False,
    private: Annotated[
        bool,
        typer.Option(
            "--private",
            help="Reads need a viewer or admin token even on loopback (behind a reverse "
            "proxy). Default: open on loopback, token beyond it.",
        ),
    ] = False,
) -> None:
    """Serve the gRPC service for agents and the dashboard with its JSON API.

    Agents connect over TLS: on first start the coordinator makes its own certificate
    authority in its data dir, and every enrollment token carries its fingerprint."""
    require_extras("coordinator serve", "coordinator")
    from edgebench.coordinator.server import Ready
    from edgebench.coordinator.server import serve as serve_forever
    from edgebench.coordinator.settings import (
        CoordinatorSettings,
        default_artifact_dir,
        default_db_url,
    )

    if public and private:
        raise typer.BadParameter("--public and --private exclude each other")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = CoordinatorSettings(
        db_url=db or default_db_url(),
        artifact_dir=artifact_dir or default_artifact_dir(),
        host=host,
        grpc_port=grpc_port,
        http_port=http_port,
        lease_seconds=lease_seconds,
        reap_seconds=reap_seconds,
        verify_band=verify_band,
        require_approval=require_approval,
        advertise=_instance_name(advertise_name) if advertise else None,
        http_workers=http_workers,
        insecure=insecure,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_names=tuple(tls_name or ()),
        https=https,
        reads="open" if public else "token" if private else None,
    )

    def ready(info: Ready) -> None:
        if info.admin_token_created:
            note = "shown once; also saved for the local CLI"
            err.print(f"admin token ({note}): {info.admin_token_created}")
        err.print(f"dashboard at {info.http_url} · agents connect to {info.grpc_address}")
        if info.authority_fingerprint:
            err.print(f"TLS: CA sha256 {info.authority_fingerprint} (tokens carry it)")
        else:
            err.print("[bold red]warning:[/] agents connect in plaintext (--insecure)")
        if settings.reads_need_token:
            err.print("reads need a viewer token (`coordinator token create --viewer`)")
        # One machine-readable line, for scripts and tests.
        line = f"READY grpc={info.grpc_address} http={info.http_url}"
        print(f"{line} ca={info.authority_fingerprint or '-'}", flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve_forever(settings, admin_token=admin_token, on_ready=ready, stop=stop)

    asyncio.run(main())


@app.command("ca")
def show_ca(
    tls_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where the coordinator keeps its TLS files.", show_default="in the data dir"
        ),
    ] = None,
    fingerprint: Annotated[
        bool, typer.Option("--fingerprint", help="Print only the sha256 fingerprint.")
    ] = False,
) -> None:
    """Print the coordinator's CA certificate (PEM), to trust its HTTPS elsewhere:
    `edgebench coordinator ca > ca.pem`, then `--ca ca.pem` or EDGEBENCH_CA=ca.pem."""
    require_extras("coordinator ca", "coordinator")
    from edgebench.coordinator.certificates import read_authority
    from edgebench.coordinator.settings import default_tls_dir
    from edgebench.tls import pem_fingerprint

    authority = read_authority(tls_dir or default_tls_dir())
    if fingerprint:
        print(pem_fingerprint(authority))
        return
    print(authority, end="")
    err.print(f"sha256 fingerprint: {pem_fingerprint(authority)}")


@token_app.command("create")
def token_create(
    contributor: Annotated[
        bool, typer.Option(help="Mark the agent as a contributor (lower trust).")
    ] = False,
    expires: Annotated[str, typer.Option(help="Lifetime such as 30m, 12h or 7d.")] = "24h",
    uses: Annotated[
        int, typer.Option(min=1, max=10_000, help="How many agents it may enroll.")
    ] = 1,
    device: Annotated[
        str | None,
        typer.Option(
            help="Re-enroll this enrolled device (a reinstalled agent). Without it the token "
            "enrolls a new device only: an enrolled name cannot be taken."
        ),
    ] = None,
    viewer: Annotated[
        bool,
        typer.Option(
            "--viewer",
            help="A read-only token for people and scrapers where reads need one (a "
            "coordinator beyond loopback without --public): a browser signs in with it at "
            "/login, a script sends it as a bearer token. It enrolls nothing.",
        ),
    ] = False,
    owner: Annotated[
        str,
        typer.Option(
            help="Who owns the devices it enrolls. Contributor results are verified by a "
            "trusted device of the same class, or where there is none, by contributors of "
            "two different owners agreeing.",
        ),
    ] = "",
    url: UrlOption = None,
    token: TokenOption = None,
    ca: CaOption = None,
) -> None:
    """Create an enrollment (or --viewer) token; prints only the token (its terms go to
    stderr)."""
    seconds = parse_duration(expires)
    created = client(url, token, ca).create_token(
        contributor=contributor,
        expires_in_seconds=seconds,
        device=device,
        uses=uses,
        viewer=viewer,
        owner=owner,
    )
    out.print(created, highlight=False)
    if viewer:
        terms = "reads the dashboard and API; enrolls nothing"
    else:
        terms = f"re-enrolls {device}" if device else f"enrolls {uses} new device(s)"
    err.print(literal(f"valid for {expires}; {terms}"))


@token_app.command("list")
def token_list(
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    ca: CaOption = None,
) -> None:
    """Every enrollment and viewer token and its state (the tokens themselves are not
    kept)."""
    tokens = client(url, token, ca).tokens()
    if as_json:
        print_json([t.model_dump(mode="json") for t in tokens])
        return
    table = Table(title="Tokens")
    for header in ("Id", "State", "Kind", "Uses left", "Expires (UTC)", "Last used (UTC)"):
        table.add_column(header)
    for t in tokens:
        kind = "viewer" if t.viewer else "contributor" if t.contributor else "operator"
        if t.device_name:
            kind += f", re-enrolls {t.device_name}"
        cells = (
            t.id[:8],
            t.state,
            kind,
            str(t.uses_left),
            when(t.expires_at, "-"),
            when(t.used_at, "-"),
        )
        table.add_row(*(literal(cell) for cell in cells))
    out.print(table)


@app.command()
def audit(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 50,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    ca: CaOption = None,
) -> None:
    """The audit log: every admin action, allowed or refused (who, what, when, from where)."""
    entries = client(url, token, ca).audit(limit)
    if as_json:
        print_json([e.model_dump(mode="json") for e in entries])
        return
    table = Table(title="Audit log")
    for header in ("When (UTC)", "Who", "What", "Status", "From"):
        table.add_column(header)
    for e in entries:
        table.add_row(when(e.at), e.actor, literal(e.action), str(e.status), literal(e.address))
    out.print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="Token id, or a unique prefix of it.")],
    url: UrlOption = None,
    token: TokenOption = None,
    ca: CaOption = None,
) -> None:
    """Revoke an enrollment token: it enrolls nothing more (enrolled agents stay)."""
    revoked = client(url, token, ca).revoke_token(token_id)
    err.print(literal(f"token {revoked.id[:8]} revoked"))
