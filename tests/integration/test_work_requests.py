"""Work requests on the real wire: a retried request gets the same lease, and an agent
whose outbox is full asks for no work (back-pressure) until results are acknowledged."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from edgebench.agent.credentials import Credential
from edgebench.agent.session import Agent
from edgebench.proto.v1 import agent_pb2 as pb
from edgebench.proto.v1 import agent_pb2_grpc as pb_grpc
from tests.conftest import Coordinator, start_coordinator, stop

pytestmark = pytest.mark.slow


class RawAgent:
    """The wire protocol by hand, so the test decides what is sent and when."""

    def __init__(self, channel: grpc.aio.Channel, agent_id: str, secret: str) -> None:
        stub = pb_grpc.AgentServiceStub(channel)
        meta = (("x-edgebench-agent-id", agent_id), ("x-edgebench-agent-secret", secret))
        self.call: Any = stub.Session(metadata=meta)

    async def open(self) -> None:
        capabilities = pb.DeviceCapabilities(engines={"llama_cpp": "0.3.36"})
        hardware = pb.HardwareInfo(capabilities=capabilities)
        await self.call.write(pb.AgentMessage(hello=pb.Hello(hardware=hardware)))
        assert (await self.call.read()).HasField("welcome")

    async def ask(self, request_id: str) -> None:
        await self.call.write(pb.AgentMessage(work_request=pb.WorkRequest(request_id=request_id)))

    async def assignment(self, timeout: float = 20.0) -> pb.RunAssignment:
        while True:
            message = await asyncio.wait_for(self.call.read(), timeout)
            if message.HasField("assignment"):
                found: pb.RunAssignment = message.assignment
                return found


async def _enroll(channel: grpc.aio.Channel, token: str) -> tuple[str, str]:
    stub = pb_grpc.AgentServiceStub(channel)
    reply = await stub.Enroll(pb.EnrollRequest(token=token, name="raw"))
    return reply.agent_id, reply.secret


@pytest.fixture
def reaping_coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    home = tmp_path / "coordinator"
    home.mkdir()
    coord = start_coordinator(home, "--reap-seconds", "1")
    yield coord
    stop(coord.process)


def test_a_retried_work_request_gets_the_same_lease(
    reaping_coordinator: Coordinator, tiny_model: Path
) -> None:
    coord = reaping_coordinator
    token = coord.token_secret()
    submitted = coord.cli("jobs", "submit", "--model", str(tiny_model), "-p", "8", "-n", "4")
    assert submitted.returncode == 0, submitted.stderr

    async def scenario() -> None:
        async with coord.aio_channel() as channel:
            agent_id, secret = await _enroll(channel, token)
            first = RawAgent(channel, agent_id, secret)
            await first.open()
            await first.ask("8c3e9a52-0d7e-4d4f-9a55-0d1c2b3a4f51")
            given = await first.assignment()
            assert given.request_id == "8c3e9a52-0d7e-4d4f-9a55-0d1c2b3a4f51"
            first.call.cancel()  # the connection drops; the agent asks again, same id

            second = RawAgent(channel, agent_id, secret)
            await second.open()
            await second.ask("not a uuid")  # refused quietly; the session goes on
            await second.ask("8c3e9a52-0d7e-4d4f-9a55-0d1c2b3a4f51")
            again = await second.assignment()
            assert (again.run_id, again.lease_epoch) == (given.run_id, given.lease_epoch)

            # A new request id while holding the run: the agent lost it (it restarted), so
            # the coordinator requeues it, and after the backoff it is leased anew.
            await second.ask(str(uuid.uuid4()))
            fresh = await second.assignment()
            assert fresh.run_id == given.run_id and fresh.lease_epoch == given.lease_epoch + 1
            second.call.cancel()

    asyncio.run(scenario())
    (job,) = coord.api("/api/v1/jobs")
    (run,) = job["runs"]
    assert run["attempts"] == 2 and run["lease_epoch"] == 2


class NeverAcks(pb_grpc.AgentServiceServicer):
    """A coordinator that takes results and acknowledges them only when told to."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[pb.AgentMessage] = asyncio.Queue()
        self.to_agent: asyncio.Queue[pb.CoordinatorMessage] = asyncio.Queue()

    async def Enroll(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this test's agent is enrolled")

    async def RotateSecret(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this test's agent keeps its secret")

    # A plain coroutine that aborts: the base declares a stream, which never starts here.
    async def FetchArtifact(self, request: Any, context: Any) -> Any:  # type: ignore[override]
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this test runs no model")

    async def Session(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        async def read() -> None:
            async for message in request_iterator:
                await self.received.put(message)

        reader = asyncio.create_task(read())
        yield pb.CoordinatorMessage(welcome=pb.Welcome(device_name="t", heartbeat_seconds=60))
        try:
            while True:
                yield await self.to_agent.get()
        finally:
            reader.cancel()


async def _next(queue: asyncio.Queue[pb.AgentMessage], kind: str, timeout: float) -> Any:
    while True:
        message = await asyncio.wait_for(queue.get(), timeout)
        if message.WhichOneof("body") == kind:
            return getattr(message, kind)


@pytest.mark.parametrize("limit", [1, 2])
def test_a_full_outbox_stops_the_agent_taking_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    monkeypatch.setenv("EDGEBENCH_HOME", str(tmp_path))

    async def scenario() -> None:
        servicer = NeverAcks()
        server = grpc.aio.server()
        pb_grpc.add_AgentServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        credential = Credential(f"127.0.0.1:{port}", "a", "s", "d", "t")
        agent = Agent(credential, outbox_limit=limit)
        waiting = pb.RunResult(result_id=str(uuid.uuid4()), run_id="r", lease_epoch=1)
        agent.outbox.add(waiting.result_id, "r", waiting.SerializeToString())
        stop_agent = asyncio.Event()
        task = asyncio.create_task(agent.run_forever(stop_agent))
        try:
            replayed = await _next(servicer.received, "result", 10)
            assert replayed.result_id == waiting.result_id
            if limit > 1:  # room for one more: it asks at once
                await _next(servicer.received, "work_request", 10)
                return
            with pytest.raises(asyncio.TimeoutError):
                await _next(servicer.received, "work_request", 2)
            ack = pb.ResultAck(result_id=waiting.result_id, accepted=True)
            await servicer.to_agent.put(pb.CoordinatorMessage(ack=ack))
            request = await _next(servicer.received, "work_request", 10)
            assert uuid.UUID(request.request_id) and len(agent.outbox) == 0
        finally:
            stop_agent.set()
            await task
            await server.stop(0)

    asyncio.run(scenario())
