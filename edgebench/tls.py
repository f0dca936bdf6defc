"""What the agent, the coordinator and the CLI share about TLS: the certificate authority's
fingerprint, the enrollment token that carries it, which hosts are loopback, and how an
agent learns the authority from the server itself with nothing but the token.

The agent cannot ask gRPC to skip verification, and Python before 3.13 shows only the
server's own certificate of the chain it receives. So the coordinator's server
certificate carries its authority's certificate in a private extension (AUTHORITY_OID):
one handshake without verification gives the agent the server certificate, the agent
takes the authority out of it, checks its sha256 against the token's fingerprint and the
server certificate's signature against it, and from then on verifies every connection
against that authority alone (docs/decisions.md "Trust")."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import ssl

from edgebench.errors import EdgebenchError

# A UUID-based object identifier (ITU-T X.667: the 2.25 arc needs no registration).
AUTHORITY_OID = "2.25.238195725066934304877325934077040069432"
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
TOKEN_SEPARATOR = "."
PUBLIC_AUTHORITY_FILE = "ca.pem"  # in the coordinator's TLS dir: the certificate alone


class TrustError(EdgebenchError):
    """The server is not the one the token or the saved authority names."""


def fingerprint(der: bytes) -> str:
    """sha256 of a certificate's DER, as 64 lowercase hex digits."""
    return hashlib.sha256(der).hexdigest()


def pem_fingerprint(pem: str) -> str:
    return fingerprint(ssl.PEM_cert_to_DER_cert(pem))


def token_with_fingerprint(secret: str, authority_fingerprint: str | None) -> str:
    """`ebe_<secret>.<fingerprint>`: the secret goes to the server, the fingerprint never."""
    if not authority_fingerprint:
        return secret
    return f"{secret}{TOKEN_SEPARATOR}{authority_fingerprint}"


def split_token(token: str) -> tuple[str, str | None]:
    """The secret and the authority's fingerprint a token carries (None: a token of a
    coordinator that serves plaintext)."""
    secret, separator, pinned = token.strip().rpartition(TOKEN_SEPARATOR)
    if not separator:
        return token.strip(), None
    if not _FINGERPRINT.fullmatch(pinned):
        raise TrustError(
            "the token's fingerprint part (after the last '.') is not 64 hex digits: "
            "copy the whole token `coordinator token create` printed"
        )
    return secret, pinned


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_address(address: str) -> tuple[str, int]:
    """HOST and PORT of `HOST:PORT` (`[v6]:PORT` too)."""
    host, separator, port = address.rpartition(":")
    if not separator or not port.isdigit() or not host:
        raise EdgebenchError(f"{address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def refuse_plaintext(address: str, insecure: bool) -> None:
    """Plaintext is allowed to loopback, and beyond it only when the user said --insecure."""
    host, _ = split_address(address)
    if not insecure and not is_loopback(host):
        raise TrustError(
            f"refusing plaintext to {host}, which is not loopback: enroll with a token that "
            "carries the coordinator's fingerprint (a coordinator serving TLS prints one), "
            "or pass --insecure to send the credential unencrypted"
        )


def authority_from_server(address: str, pinned: str, timeout: float = 10.0) -> str:
    """The PEM of the authority the server at `address` embeds in its certificate, once
    its sha256 is `pinned` and it signed that certificate."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.serialization import Encoding

    leaf = x509.load_pem_x509_certificate(_server_certificate(address, timeout).encode())
    try:
        embedded = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(AUTHORITY_OID))
    except x509.ExtensionNotFound:
        raise TrustError(
            f"the server at {address} does not name its authority (its own certificates, "
            "--tls-cert): give the agent that authority's certificate with --ca FILE"
        ) from None
    if not isinstance(embedded.value, x509.UnrecognizedExtension):
        raise TrustError(f"the server at {address} names its authority in an unknown form")
    der = embedded.value.value  # the extension's raw bytes: the authority's DER
    if fingerprint(der) != pinned:
        raise TrustError(
            f"the server at {address} is not the coordinator the token was made by "
            f"(authority {fingerprint(der)[:16]}..., token {pinned[:16]}...)"
        )
    authority = x509.load_der_x509_certificate(der)
    try:
        leaf.verify_directly_issued_by(authority)
    except (InvalidSignature, ValueError, TypeError):
        raise TrustError(
            f"the server at {address} shows a certificate its authority did not sign"
        ) from None
    return authority.public_bytes(Encoding.PEM).decode()


def check_pinned(authority_pem: str, pinned: str | None) -> None:
    """An authority given by file must still be the one the token names."""
    if pinned and pem_fingerprint(authority_pem) != pinned:
        raise TrustError(
            f"the --ca certificate's fingerprint is not the token's ({pinned[:16]}...)"
        )


def speaks_tls(address: str, timeout: float = 3.0) -> bool:
    """Whether the server at `address` completes a TLS handshake."""
    try:
        _server_certificate(address, timeout)
    except TrustError:
        return False
    return True


def _server_certificate(address: str, timeout: float) -> str:
    host, port = split_address(address)
    try:
        return ssl.get_server_certificate((host, port), timeout=timeout)
    except (ssl.SSLError, ConnectionResetError) as exc:
        raise TrustError(
            f"the coordinator at {address} does not speak TLS ({exc.__class__.__name__}): "
            "it serves plaintext (--insecure), so enroll with a token it made and --insecure"
        ) from None
    except OSError as exc:
        reason = exc.strerror or exc
        raise TrustError(f"coordinator not reachable at {address} ({reason})") from None
