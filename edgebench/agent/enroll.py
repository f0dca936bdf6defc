"""Enrollment: trade a one-time token for this agent's own credential."""

from __future__ import annotations

import grpc

from edgebench.agent import hardware
from edgebench.agent.credentials import Credential
from edgebench.agent.session import channel_options
from edgebench.errors import EdgebenchError
from edgebench.proto.convert import to_message
from edgebench.proto.v1 import agent_pb2 as pb
from edgebench.proto.v1 import agent_pb2_grpc as pb_grpc


class EnrollError(EdgebenchError):
    pass


def enroll(coordinator: str, token: str, *, name: str, tags: dict[str, str]) -> Credential:
    snapshot = hardware.snapshot()
    request = pb.EnrollRequest(
        token=token,
        name=name or snapshot.identity.hostname,
        hardware=to_message(snapshot, pb.HardwareInfo()),
        tags=tags,
    )
    with grpc.insecure_channel(coordinator, options=channel_options()) as channel:
        try:
            reply = pb_grpc.AgentServiceStub(channel).Enroll(request, timeout=15)
        except grpc.RpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise EnrollError(f"coordinator not reachable at {coordinator}") from None
            raise EnrollError(f"enrollment refused: {exc.details()}") from None
    return Credential(
        coordinator=coordinator,
        agent_id=reply.agent_id,
        secret=reply.secret,
        device_id=reply.device_id,
        device_name=reply.device_name,
    )
