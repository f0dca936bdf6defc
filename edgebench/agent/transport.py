"""The agent's channel to the coordinator: verified against the TLS authority saved at
enrollment, or plaintext where the user allowed it (loopback, or --insecure)."""

from __future__ import annotations

import grpc

from edgebench.agent.credentials import Credential
from edgebench.protocol import AGENT_ID_KEY, AGENT_SECRET_KEY, MAX_MESSAGE_BYTES
from edgebench.tls import refuse_plaintext, speaks_tls


def channel_options() -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        # Longer than the coordinator's minimum ping interval (10 s), so never a strike.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", 10_000),
    ]


def metadata(credential: Credential) -> tuple[tuple[str, str], ...]:
    """What authenticates the agent on every call."""
    return ((AGENT_ID_KEY, credential.agent_id), (AGENT_SECRET_KEY, credential.secret))


def credentials_for(
    address: str, authority_pem: str, insecure: bool
) -> grpc.ChannelCredentials | None:
    """TLS credentials trusting `authority_pem` alone; None (plaintext) only where allowed."""
    if authority_pem:
        return grpc.ssl_channel_credentials(root_certificates=authority_pem.encode())
    refuse_plaintext(address, insecure)
    return None


def open_channel(address: str, authority_pem: str, insecure: bool) -> grpc.Channel:
    tls = credentials_for(address, authority_pem, insecure)
    if tls is None:
        return grpc.insecure_channel(address, options=channel_options())
    return grpc.secure_channel(address, tls, options=channel_options())


def open_session_channel(credential: Credential, insecure: bool) -> grpc.aio.Channel:
    address, authority = credential.coordinator, credential.authority_pem
    tls = credentials_for(address, authority, insecure)
    if tls is None:
        return grpc.aio.insecure_channel(address, options=channel_options())
    return grpc.aio.secure_channel(address, tls, options=channel_options())


def unreachable_reason(address: str, error: grpc.RpcError, plaintext: bool = False) -> str:
    """What a failed connection means for the user: plaintext to a server that speaks TLS,
    a certificate that does not name the address, or nothing listening."""
    if plaintext and speaks_tls(address):
        return (
            f"the coordinator at {address} speaks TLS: enroll with the whole token "
            "`coordinator token create` printed (it ends with '.' and the CA's fingerprint)"
        )
    details = (getattr(error, "details", lambda: "")() or "").lower()
    if "ssl" in details or "handshake" in details or "certificate" in details:
        return (
            f"the TLS handshake with {address} failed: the coordinator's certificate may not "
            f"name {address.rpartition(':')[0]} (restart it with --tls-name NAME), or it "
            "serves plaintext (--insecure)"
        )
    return f"coordinator not reachable at {address}"
