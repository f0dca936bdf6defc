"""Enrollment: trade a one-time token for this agent's own credential, pinning the
coordinator's TLS authority named by the token (edgebench/tls.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import grpc

from edgebench.agent import hardware
from edgebench.agent.credentials import Credential
from edgebench.agent.transport import metadata, open_channel, unreachable_reason
from edgebench.errors import EdgebenchError
from edgebench.proto.convert import to_message
from edgebench.proto.v1 import agent_pb2 as pb
from edgebench.proto.v1 import agent_pb2_grpc as pb_grpc
from edgebench.tls import authority_from_server, check_pinned, split_token


class EnrollError(EdgebenchError):
    pass


def enroll(
    coordinator: str,
    token: str,
    *,
    name: str,
    tags: dict[str, str],
    insecure: bool = False,
    authority_file: Path | None = None,
) -> Credential:
    secret, pinned = split_token(token)
    authority = _authority(coordinator, pinned, authority_file)
    snapshot = hardware.snapshot()
    request = pb.EnrollRequest(
        token=secret,
        name=name or snapshot.identity.hostname,
        hardware=to_message(snapshot, pb.HardwareInfo()),
        tags=tags,
    )
    with open_channel(coordinator, authority, insecure) as channel:
        try:
            reply = pb_grpc.AgentServiceStub(channel).Enroll(request, timeout=15)
        except grpc.RpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                reason = unreachable_reason(coordinator, exc, plaintext=not authority)
                raise EnrollError(reason) from None
            raise EnrollError(f"enrollment refused: {exc.details()}") from None
    return Credential(
        coordinator=coordinator,
        agent_id=reply.agent_id,
        secret=reply.secret,
        device_id=reply.device_id,
        device_name=reply.device_name,
        authority_pem=authority,
    )


def rotate(credential: Credential, *, insecure: bool = False) -> Credential:
    """The same credential with a new secret (the coordinator forgets the old one)."""
    address = credential.coordinator
    with open_channel(address, credential.authority_pem, insecure) as channel:
        try:
            reply = pb_grpc.AgentServiceStub(channel).RotateSecret(
                pb.RotateSecretRequest(), metadata=metadata(credential), timeout=15
            )
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise EnrollError(unreachable_reason(address, exc)) from None
            raise EnrollError(f"rotation refused: {exc.details()}") from None
    return replace(credential, secret=reply.secret)


def _authority(coordinator: str, pinned: str | None, authority_file: Path | None) -> str:
    """The authority to verify the coordinator against ("": none, plaintext)."""
    if authority_file is not None:
        try:
            authority = authority_file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise EnrollError(f"cannot read --ca {authority_file}: {exc}") from None
        check_pinned(authority, pinned)
        return authority
    if pinned:
        return authority_from_server(coordinator, pinned)
    return ""
