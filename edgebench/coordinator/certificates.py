"""The coordinator's TLS material: its own certificate authority (made once, ten years, in
the data dir, 0600) and a server certificate issued on every start for the names it is
reached by; or the operator's own certificate and key (--tls-cert/--tls-key)."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgebench import paths
from edgebench.coordinator.settings import CoordinatorSettings
from edgebench.errors import EdgebenchError
from edgebench.tls import AUTHORITY_OID, PUBLIC_AUTHORITY_FILE, fingerprint, is_loopback

AUTHORITY_FILE = "authority.pem"  # key and certificate, 0600
SERVER_FILE = "server.pem"  # this start's certificate chain and key, for the HTTP side
AUTHORITY_YEARS = 10
SERVER_DAYS = 397  # the longest a browser accepts; renewed on every start anyway


class CertificateError(EdgebenchError):
    pass


@dataclass(frozen=True)
class ServerTls:
    """What a coordinator serves TLS with."""

    chain_pem: bytes  # the server certificate, then its authority
    key_pem: bytes
    authority_pem: str
    fingerprint: str  # sha256 of the authority's DER: what tokens carry
    combined_file: Path  # chain and key in one file (uvicorn loads both from it)


def read_authority(tls_dir: Path) -> str:
    """The PEM of the coordinator's own authority (`coordinator ca`)."""
    path = tls_dir / AUTHORITY_FILE
    try:
        _, certificate = _load_authority(path)
    except FileNotFoundError:
        raise CertificateError(
            f"no certificate authority in {tls_dir}: `coordinator serve` makes one on its first "
            "start (unless --insecure or --tls-cert)"
        ) from None
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def prepare(tls_dir: Path, names: list[str]) -> ServerTls:
    """The own authority (made on first use) and a new server certificate for `names`."""
    key, authority = _authority(tls_dir)
    server_key = ec.generate_private_key(ec.SECP256R1())
    certificate = _server_certificate(key, authority, server_key, names)
    pem = serialization.Encoding.PEM
    chain = certificate.public_bytes(pem) + authority.public_bytes(pem)
    key_pem = server_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    combined = tls_dir / SERVER_FILE
    paths.write_private(combined, (chain + key_pem).decode())
    return ServerTls(
        chain,
        key_pem,
        authority.public_bytes(pem).decode(),
        fingerprint(authority.public_bytes(serialization.Encoding.DER)),
        combined,
    )


def from_files(cert_file: Path, key_file: Path, tls_dir: Path) -> ServerTls:
    """The operator's certificate chain and key. Its fingerprint (what tokens carry) is the
    chain's last certificate's: the authority agents are given with --ca."""
    try:
        chain = cert_file.read_bytes()
        key_pem = key_file.read_bytes()
        certificates = x509.load_pem_x509_certificates(chain)
        serialization.load_pem_private_key(key_pem, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise CertificateError(f"cannot use --tls-cert/--tls-key: {exc}") from None
    top = certificates[-1]
    combined = tls_dir / SERVER_FILE
    paths.write_private(combined, (chain + b"\n" + key_pem).decode())
    return ServerTls(
        chain,
        key_pem,
        top.public_bytes(serialization.Encoding.PEM).decode(),
        fingerprint(top.public_bytes(serialization.Encoding.DER)),
        combined,
    )


def server_names(host: str, extra: tuple[str, ...] = ()) -> list[str]:
    """The names and addresses agents may reach this coordinator by: the hostname and
    `hostname.local`, loopback, the bound address (every local address when bound to all)
    and the operator's --tls-name values."""
    hostname = socket.gethostname()
    names = [hostname, f"{hostname}.local", "localhost", "127.0.0.1", "::1", *extra]
    if host in ("0.0.0.0", "::", ""):
        names += _local_addresses(hostname)
    else:
        names.append(host)
    return list(dict.fromkeys(name for name in names if name))


def _local_addresses(hostname: str) -> list[str]:
    found: list[str] = []
    with contextlib.suppress(OSError):
        found += [str(info[4][0]) for info in socket.getaddrinfo(hostname, None)]
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        # connecting a UDP socket sends nothing: it only picks the outgoing address
        probe.connect(("10.255.255.255", 1))
        found.append(str(probe.getsockname()[0]))
    return found


def _authority(tls_dir: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    path = tls_dir / AUTHORITY_FILE
    with contextlib.suppress(FileNotFoundError):
        return _load_authority(path)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _new_authority(key)
    pem = serialization.Encoding.PEM
    text = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _create_once(path, text + certificate.public_bytes(pem))
    key, certificate = _load_authority(path)  # another coordinator may have made it first
    public = tls_dir / PUBLIC_AUTHORITY_FILE
    if not public.exists():
        public.write_bytes(certificate.public_bytes(pem))
    return key, certificate


def _load_authority(path: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    data = path.read_bytes()
    try:
        key = serialization.load_pem_private_key(data, password=None)
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError(f"{path} is damaged ({exc}): move it away to make a new one "
                               "(every agent must then enroll again)") from None  # fmt: skip
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{path} does not hold an EC key")
    return key, certificate


def _create_once(path: Path, data: bytes) -> None:
    """Writes `path` (0600) unless it exists: two coordinators sharing a data dir on first
    start end up with one authority."""
    paths.ensure(path.parent)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    try:
        with contextlib.suppress(FileExistsError):  # made first by the other: theirs stays
            os.link(tmp, path)
    finally:
        tmp.unlink()


def _new_authority(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    common_name = f"edgebench CA {socket.gethostname()}"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365 * AUTHORITY_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(certificate_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _server_certificate(
    authority_key: ec.EllipticCurvePrivateKey,
    authority: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    names: list[str],
) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    authority_der = authority.public_bytes(serialization.Encoding.DER)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(authority.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(_alternative_names(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(AUTHORITY_OID), authority_der),
            critical=False,
        )
        .sign(authority_key, hashes.SHA256())
    )


def _alternative_names(names: list[str]) -> list[x509.GeneralName]:
    general: list[x509.GeneralName] = []
    for name in names:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(name.strip("[]"))))
        except ValueError:
            general.append(x509.DNSName(name))
    return general


def _usage(*, certificate_sign: bool = False, digital_signature: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=certificate_sign,
        crl_sign=certificate_sign,
        encipher_only=False,
        decipher_only=False,
    )


def for_settings(settings: CoordinatorSettings) -> ServerTls | None:
    """What these settings serve TLS with; None for plaintext (--insecure)."""
    if settings.insecure:
        return None
    if settings.tls_cert or settings.tls_key:
        if not (settings.tls_cert and settings.tls_key):
            raise CertificateError("--tls-cert and --tls-key go together")
        return from_files(settings.tls_cert, settings.tls_key, settings.tls_dir)
    return prepare(settings.tls_dir, server_names(settings.host, settings.tls_names))


def serves_https(settings: CoordinatorSettings) -> bool:
    """The HTTP side speaks TLS when bound beyond loopback (or when told to)."""
    if settings.insecure:
        return False
    return settings.https if settings.https is not None else not is_loopback(settings.host)
