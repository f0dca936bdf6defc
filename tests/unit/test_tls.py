"""The coordinator's certificates and the agent's pinning, against real gRPC servers on
loopback: the right server is trusted with nothing but the token, every other is refused."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Literal

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from edgebench.agent.transport import credentials_for
from edgebench.cli.client import CoordinatorClient, plain_beyond_loopback
from edgebench.coordinator import certificates
from edgebench.coordinator.certificates import AUTHORITY_FILE, CertificateError, ServerTls
from edgebench.coordinator.settings import CoordinatorSettings
from edgebench.tls import (
    AUTHORITY_OID,
    PUBLIC_AUTHORITY_FILE,
    TrustError,
    authority_from_server,
    check_pinned,
    is_loopback,
    pem_fingerprint,
    refuse_plaintext,
    split_token,
    token_with_fingerprint,
)

FINGERPRINT = "ab" * 32
NAMES = ["box", "localhost", "127.0.0.1", "coordinator.lan"]


def _serve(chain_pem: bytes, key_pem: bytes) -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    credentials = grpc.ssl_server_credentials([(key_pem, chain_pem)])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


@pytest.fixture
def own(tmp_path: Path) -> ServerTls:
    return certificates.prepare(tmp_path / "tls", NAMES)


@pytest.fixture
def served(own: ServerTls) -> Iterator[str]:
    yield from _serve(own.chain_pem, own.key_pem)


def _health(address: str, authority_pem: str) -> int:
    tls = credentials_for(address, authority_pem, insecure=False)
    assert tls is not None
    with grpc.secure_channel(address, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    issuer: str,
    *,
    authority: bool = False,
    embedded: bytes | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=authority, path_length=None), critical=True)
    )
    if not authority:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if embedded is not None:
        extension = x509.UnrecognizedExtension(x509.ObjectIdentifier(AUTHORITY_OID), embedded)
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(signer, hashes.SHA256())


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# ---- tokens and addresses ------------------------------------------------------------


def test_a_token_carries_the_fingerprint_apart_from_its_secret() -> None:
    token = token_with_fingerprint("ebe_s3cr-t_x", FINGERPRINT)
    assert token == f"ebe_s3cr-t_x.{FINGERPRINT}"
    assert split_token(token) == ("ebe_s3cr-t_x", FINGERPRINT)
    assert split_token("  ebe_plain \n") == ("ebe_plain", None)
    assert token_with_fingerprint("ebe_plain", None) == "ebe_plain"


@pytest.mark.parametrize("bad", ["ebe_x.abc", f"ebe_x.{'AB' * 32}", f"ebe_x.{'zz' * 32}", "ebe_x."])
def test_a_token_with_a_damaged_fingerprint_is_refused(bad: str) -> None:
    with pytest.raises(TrustError, match="64 hex digits"):
        split_token(bad)


def test_loopback_hosts() -> None:
    assert all(map(is_loopback, ["localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]"]))
    assert not any(map(is_loopback, ["10.0.0.5", "pi.local", "0.0.0.0", "example.org"]))


def test_plaintext_beyond_loopback_needs_insecure() -> None:
    refuse_plaintext("127.0.0.1:50051", insecure=False)
    refuse_plaintext("10.0.0.5:50051", insecure=True)
    with pytest.raises(TrustError, match=r"refusing plaintext to 10\.0\.0\.5"):
        refuse_plaintext("10.0.0.5:50051", insecure=False)
    with pytest.raises(TrustError, match="not loopback"):
        credentials_for("pi.local:50051", "", insecure=False)


def test_the_cli_never_sends_the_admin_token_over_plain_http_beyond_loopback() -> None:
    assert plain_beyond_loopback("http://10.0.0.5:8080")
    assert not plain_beyond_loopback("https://10.0.0.5:8080")
    assert not plain_beyond_loopback("http://127.0.0.1:8080")
    remote = CoordinatorClient("http://10.0.0.5:8080", "eba_secret")
    local = CoordinatorClient("http://127.0.0.1:8080", "eba_secret")
    try:
        assert "authorization" not in remote._http.headers
        assert local._http.headers["authorization"] == "Bearer eba_secret"
    finally:
        remote.close()
        local.close()


# ---- the coordinator's own authority ------------------------------------------------


def test_the_authority_is_made_once_private_and_the_server_certificate_each_start(
    tmp_path: Path,
) -> None:
    first = certificates.prepare(tmp_path / "tls", NAMES)
    second = certificates.prepare(tmp_path / "tls", NAMES)
    assert first.fingerprint == second.fingerprint == pem_fingerprint(first.authority_pem)
    assert first.chain_pem != second.chain_pem  # a new server certificate
    assert stat.S_IMODE((tmp_path / "tls" / AUTHORITY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(first.combined_file.stat().st_mode) == 0o600
    public = (tmp_path / "tls" / PUBLIC_AUTHORITY_FILE).read_text()
    assert public == first.authority_pem and "PRIVATE" not in public
    authority = x509.load_pem_x509_certificate(first.authority_pem.encode())
    assert authority.not_valid_after_utc - authority.not_valid_before_utc > dt.timedelta(days=3650)


def test_the_server_certificate_names_every_address_and_embeds_its_authority(
    own: ServerTls,
) -> None:
    leaf = x509.load_pem_x509_certificates(own.chain_pem)[0]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"box", "localhost", "coordinator.lan"} <= set(names.get_values_for_type(x509.DNSName))
    assert "127.0.0.1" in {str(a) for a in names.get_values_for_type(x509.IPAddress)}
    embedded = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(AUTHORITY_OID))
    assert isinstance(embedded.value, x509.UnrecognizedExtension)
    authority = x509.load_pem_x509_certificate(own.authority_pem.encode())
    assert embedded.value.value == authority.public_bytes(serialization.Encoding.DER)


def test_server_names_cover_the_hostname_loopback_and_extra_names() -> None:
    names = certificates.server_names("192.0.2.7", ("coordinator.lan",))
    assert {"localhost", "127.0.0.1", "192.0.2.7", "coordinator.lan"} <= set(names)
    assert any(name.endswith(".local") for name in names)
    assert "0.0.0.0" not in certificates.server_names("0.0.0.0")


def test_an_existing_authority_is_never_replaced(tmp_path: Path) -> None:
    first = certificates.prepare(tmp_path, NAMES)
    certificates._create_once(tmp_path / AUTHORITY_FILE, b"another coordinator's")
    assert certificates.prepare(tmp_path, NAMES).fingerprint == first.fingerprint
    assert not list(tmp_path.glob("*.tmp"))


def test_a_damaged_authority_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / AUTHORITY_FILE).write_text("not a key")
    with pytest.raises(CertificateError, match="damaged"):
        certificates.prepare(tmp_path, NAMES)
    with pytest.raises(CertificateError, match="no certificate authority"):
        certificates.read_authority(tmp_path / "absent")


def test_the_operators_own_certificate_is_served_as_given(tmp_path: Path) -> None:
    authority_key, server_key = _key(), _key()
    authority = _certificate("Their CA", authority_key, authority_key, "Their CA", authority=True)
    leaf = _certificate("their-server", server_key, authority_key, "Their CA")
    (tmp_path / "chain.pem").write_bytes(_pem(leaf) + _pem(authority))
    (tmp_path / "key.pem").write_bytes(_key_pem(server_key))
    tls = certificates.from_files(tmp_path / "chain.pem", tmp_path / "key.pem", tmp_path / "tls")
    assert tls.fingerprint == pem_fingerprint(_pem(authority).decode())
    (tmp_path / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n")
    with pytest.raises(CertificateError, match="cannot use --tls-cert"):
        certificates.from_files(tmp_path / "broken.pem", tmp_path / "key.pem", tmp_path)


# ---- the agent's pinning, against real servers ------------------------------------


def test_the_token_alone_pins_the_right_server(own: ServerTls, served: str) -> None:
    authority = authority_from_server(served, own.fingerprint)
    assert pem_fingerprint(authority) == own.fingerprint
    assert _health(served, authority) == health_pb2.HealthCheckResponse.SERVING


def test_a_server_of_another_authority_is_refused(served: str) -> None:
    with pytest.raises(TrustError, match="not the coordinator the token was made by"):
        authority_from_server(served, FINGERPRINT)


def test_a_server_that_embeds_the_right_authority_but_was_signed_by_another_is_refused(
    own: ServerTls,
) -> None:
    # an impostor copies the real authority's certificate into its own server certificate
    real_der = x509.load_pem_x509_certificate(own.authority_pem.encode()).public_bytes(
        serialization.Encoding.DER
    )
    impostor_key, server_key = _key(), _key()
    leaf = _certificate("impostor", server_key, impostor_key, "edgebench CA", embedded=real_der)
    for address in _serve(_pem(leaf), _key_pem(server_key)):
        with pytest.raises(TrustError, match="did not sign"):
            authority_from_server(address, own.fingerprint)


def test_a_verified_channel_refuses_a_server_of_another_authority(
    tmp_path: Path, served: str
) -> None:
    other = certificates.prepare(tmp_path / "other", NAMES)
    with pytest.raises(grpc.RpcError) as refused:
        _health(served, other.authority_pem)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_server_with_the_operators_certificates_needs_the_ca_by_file(tmp_path: Path) -> None:
    authority_key, server_key = _key(), _key()
    authority = _certificate("Their CA", authority_key, authority_key, "Their CA", authority=True)
    leaf = _certificate("their-server", server_key, authority_key, "Their CA")
    for address in _serve(_pem(leaf) + _pem(authority), _key_pem(server_key)):
        with pytest.raises(TrustError, match="--ca FILE"):
            authority_from_server(address, pem_fingerprint(_pem(authority).decode()))
        check_pinned(_pem(authority).decode(), pem_fingerprint(_pem(authority).decode()))
        assert _health(address, _pem(authority).decode()) == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(TrustError, match="not the token's"):
        check_pinned(_pem(authority).decode(), FINGERPRINT)


def test_a_plaintext_server_is_named_as_such() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with pytest.raises(TrustError, match="does not speak TLS"):
            authority_from_server(f"127.0.0.1:{port}", FINGERPRINT, timeout=5)
    finally:
        server.stop(None)


def test_reads_need_a_token_beyond_loopback_unless_public(tmp_path: Path) -> None:
    def settings(host: str, reads: Literal["open", "token"] | None = None) -> bool:
        made = CoordinatorSettings(
            db_url="sqlite://", artifact_dir=tmp_path, host=host, reads=reads
        )
        return made.reads_need_token

    assert not settings("127.0.0.1") and not settings("::1")
    assert settings("0.0.0.0") and settings("192.168.1.10")
    assert not settings("0.0.0.0", "open")  # --public
    assert settings("127.0.0.1", "token")  # --private
