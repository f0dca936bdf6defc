"""Every RPC of the agent port fuzzed against a real coordinator (tests/fuzzing.py): any
message of the contract, plausible results with fields drawn anew, raw bytes that parse
as nothing, good and bad credentials. The coordinator answers each with a status an agent
understands (never INTERNAL or UNKNOWN), keeps serving, and its store keeps its shape.
Bounded here (about two minutes); scripts/fuzz.py runs 100,000 calls per RPC."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgebench.proto.v1 import agent_pb2 as pb
from edgebench.proto.v1 import agent_pb2_grpc as pb_grpc
from tests.conftest import Coordinator
from tests.fuzzing import CLIENT_ERRORS, agent_messages, garbage, messages

pytestmark = pytest.mark.slow
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same calls on every run: a failure here is reproducible
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
METHODS = ("Enroll", "Session", "FetchArtifact", "RotateSecret")
# what a metadata value can hold on the wire (grpc refuses others in the client, INTERNAL)
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)


@pytest.fixture
def agent(coordinator: Coordinator) -> Iterator[tuple[Any, tuple[tuple[str, str], ...]]]:
    """A raw client, enrolled, and its credentials."""
    channel = coordinator.channel()
    stub = pb_grpc.AgentServiceStub(channel)
    token = coordinator.token_secret()
    reply = stub.Enroll(pb.EnrollRequest(token=token, name="fuzzer"), timeout=10)
    metadata = (("x-edgebench-agent-id", reply.agent_id),
                ("x-edgebench-agent-secret", reply.secret))  # fmt: skip
    yield stub, metadata
    channel.close()
    _still_sound(coordinator)


@pytest.fixture
def fuzzed(coordinator: Coordinator) -> Iterator[Coordinator]:
    """The coordinator, checked sound once its calls are done."""
    yield coordinator
    _still_sound(coordinator)


def _code(call: Any) -> grpc.StatusCode:
    try:
        outcome = call()
        if isinstance(outcome, Iterator):
            for _ in outcome:
                pass
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def _answered(call: Any) -> None:
    code = _code(call)
    assert code in CLIENT_ERRORS, f"the coordinator answered {code.name}"


def _still_sound(coordinator: Coordinator) -> None:
    assert coordinator.process.poll() is None, "the coordinator died"
    with coordinator.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    for path in ("/api/v1/results", "/api/v1/devices", "/api/v1/jobs", "/leaderboard", "/"):
        assert httpx.get(coordinator.http + path, timeout=30).status_code == 200, path
    with sqlite3.connect(coordinator.db_path) as db:
        (orphans,) = db.execute(
            "SELECT count(*) FROM result LEFT JOIN result_payload p ON p.result_id = result.id "
            "WHERE p.result_id IS NULL"
        ).fetchone()
    assert orphans == 0, "a result stored without its payload"


@FUZZ
@given(hello=st.one_of(messages(pb.Hello), st.just(pb.Hello())),
       rest=st.lists(agent_messages(), max_size=8))  # fmt: skip
def test_sessions(agent: Any, hello: pb.Hello, rest: list[pb.AgentMessage]) -> None:
    stub, metadata = agent
    sent = [pb.AgentMessage(hello=hello), *rest]
    _answered(lambda: stub.Session(iter(sent), metadata=metadata, timeout=10))


@FUZZ
@given(request=messages(pb.FetchArtifactRequest), secret=st.one_of(st.none(), HEADER_TEXT))
def test_artifact_fetches_and_rotations(
    agent: Any, request: pb.FetchArtifactRequest, secret: str | None
) -> None:
    stub, metadata = agent
    if secret is not None:  # someone else's guess: refused (never rotates the real one)
        metadata = (metadata[0], ("x-edgebench-agent-secret", secret))
        _answered(lambda: stub.RotateSecret(pb.RotateSecretRequest(), metadata=metadata,
                                            timeout=10))  # fmt: skip
    _answered(lambda: stub.FetchArtifact(request, metadata=metadata, timeout=10))


@FUZZ
@given(request=messages(pb.EnrollRequest))
def test_enrollments(fuzzed: Coordinator, request: pb.EnrollRequest) -> None:
    with fuzzed.channel() as channel:
        stub = pb_grpc.AgentServiceStub(channel)
        _answered(lambda: stub.Enroll(request, timeout=10))


@FUZZ
@given(method=st.sampled_from(METHODS), body=garbage())
def test_bytes_that_parse_as_nothing(fuzzed: Coordinator, method: str, body: bytes) -> None:
    path = f"/edgebench.v1.AgentService/{method}"
    with fuzzed.channel() as channel:
        if method == "Session":
            call = channel.stream_stream(path)
            _answered(lambda: call(iter([body]), timeout=10))
        elif method == "FetchArtifact":
            _answered(lambda: channel.unary_stream(path)(body, timeout=10))
        else:
            _answered(lambda: channel.unary_unary(path)(body, timeout=10))
