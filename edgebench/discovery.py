"""Finding a coordinator on the LAN over mDNS (`coordinator serve --advertise [NAME]`,
`agent enroll/run --discover [NAME]`).

The coordinator announces `_edgebench._tcp.local.` as instance NAME with its gRPC port and,
in TXT records, its edgebench version and its CA's sha256 fingerprint ("-" when it serves
plaintext). An advertisement is a hint, never trust: an agent takes only an instance
whose fingerprint is the one it will verify against (the token's at enrollment, the CA it
saved for `agent run`), ignores the rest, and then verifies the TLS handshake against
that CA as for any address. zeroconf is imported only here, only when asked for.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import Any

from edgebench import __version__
from edgebench.errors import EdgebenchError

SERVICE_TYPE = "_edgebench._tcp.local."
PLAINTEXT = "-"  # the fingerprint TXT value of a coordinator without TLS
DISCOVER_SECONDS = 5.0


class DiscoveryError(EdgebenchError):
    """No coordinator that this agent may trust answered."""


@dataclass(frozen=True)
class Found:
    instance: str  # the advertised name
    address: str  # HOST:PORT of its agent port
    fingerprint: str  # its CA's sha256, or PLAINTEXT
    version: str


def _interfaces(host: str) -> Any:
    from zeroconf import InterfaceChoice

    return InterfaceChoice.All if host in ("", "0.0.0.0", "::") else [host]


class Advertisement:
    """The coordinator's announcement, until close()."""

    def __init__(self, name: str, host: str, port: int, fingerprint: str | None) -> None:
        from zeroconf import ServiceInfo, Zeroconf

        every = host in ("", "0.0.0.0", "::")
        addresses = _local_ipv4() if every else [host]
        self._zeroconf = Zeroconf(interfaces=_interfaces(host))
        self.info = ServiceInfo(
            SERVICE_TYPE,
            f"{name}.{SERVICE_TYPE}",
            addresses=[socket.inet_aton(a) for a in addresses if ":" not in a],
            port=port,
            properties={"version": __version__, "ca": fingerprint or PLAINTEXT},
            server=f"{socket.gethostname()}.local.",
        )
        self._zeroconf.register_service(self.info)

    def close(self) -> None:
        self._zeroconf.unregister_service(self.info)
        self._zeroconf.close()


def _local_ipv4() -> list[str]:
    """Every IPv4 address of this host (ifaddr comes with zeroconf)."""
    import ifaddr

    return [
        str(ip.ip)
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if isinstance(ip.ip, str)
    ]


def discover(
    *,
    name: str | None,
    trusted: str | None,
    insecure: bool,
    interface: str = "",
    seconds: float = DISCOVER_SECONDS,
) -> Found:
    """The first advertised coordinator (or the one named) whose fingerprint is `trusted`
    (None: any fingerprint, for a token that names none; the TLS check that follows
    decides). One without TLS is taken only when `insecure`. Others are passed over,
    with the reason kept for the error."""
    from zeroconf import ServiceBrowser, ServiceListener, Zeroconf

    seen: list[str] = []
    chosen: list[Found] = []
    done = threading.Event()
    zeroconf = Zeroconf(interfaces=_interfaces(interface))

    class Listener(ServiceListener):
        def add_service(self, zc: Any, kind: str, full: str) -> None:
            info = zc.get_service_info(kind, full, timeout=2000)
            found = _found(info, full) if info else None
            if found is None:
                return
            why = _passed_over(found, name, trusted, insecure)
            if why:
                seen.append(f"{found.instance} at {found.address}: {why}")
            elif not done.is_set():
                chosen.append(found)
                done.set()

        def update_service(self, zc: Any, kind: str, full: str) -> None:
            self.add_service(zc, kind, full)

        def remove_service(self, zc: Any, kind: str, full: str) -> None:
            """Gone before it was chosen: nothing to do."""

    browser = ServiceBrowser(zeroconf, SERVICE_TYPE, Listener())
    try:
        done.wait(seconds)
    finally:
        browser.cancel()
        zeroconf.close()
    if chosen:
        return chosen[0]
    wanted = f"named {name!r} " if name else ""
    detail = f" (passed over: {'; '.join(seen)})" if seen else ""
    raise DiscoveryError(
        f"no edgebench coordinator {wanted}that this agent may trust answered on the LAN "
        f"within {seconds:g} s{detail}; give --coordinator HOST:PORT instead"
    )


def _found(info: Any, full: str) -> Found | None:
    addresses = info.parsed_addresses()
    if not addresses or not info.port:
        return None
    props = {k.decode(errors="replace"): (v or b"").decode(errors="replace")
             for k, v in (info.properties or {}).items()}  # fmt: skip
    return Found(
        instance=full.removesuffix(f".{SERVICE_TYPE}"),
        address=f"{addresses[0]}:{info.port}",
        fingerprint=props.get("ca", PLAINTEXT),
        version=props.get("version", "?"),
    )


def _passed_over(found: Found, name: str | None, trusted: str | None, insecure: bool) -> str:
    if name and found.instance != name:
        return "another name"
    if found.fingerprint == PLAINTEXT:
        return "" if insecure else "it serves plaintext (--insecure to take it)"
    if trusted is not None and found.fingerprint != trusted:
        return "its CA fingerprint is not the one this agent trusts"
    return ""
