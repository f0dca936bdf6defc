"""A real agent against a hostile coordinator (a gRPC server on loopback that lies): a
negative heartbeat interval, a model named by a path, a model bigger than it said, a
spec that cannot be, cancellations and acknowledgements of nothing. The agent refuses
each with a reason it reports, writes nothing outside its cache, and keeps asking for
work."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from edgebench.agent.credentials import Credential
from edgebench.agent.session import Agent
from edgebench.proto.convert import to_message
from edgebench.proto.v1 import agent_pb2 as pb
from edgebench.proto.v1 import agent_pb2_grpc as pb_grpc
from edgebench.workload import RunSpec

pytestmark = pytest.mark.slow
OVERSIZED = b"GGUF" + bytes(5000)


class Liar(pb_grpc.AgentServiceServicer):
    def __init__(self) -> None:
        self.received: asyncio.Queue[pb.AgentMessage] = asyncio.Queue()
        self.to_agent: asyncio.Queue[pb.CoordinatorMessage] = asyncio.Queue()

    async def Enroll(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "enrolled already")

    async def RotateSecret(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no")

    async def FetchArtifact(self, request: Any, context: Any) -> Any:
        for offset in range(0, len(OVERSIZED), 1000):  # far more than the 10 bytes it said
            yield pb.ArtifactChunk(offset=offset, data=OVERSIZED[offset : offset + 1000])

    async def Session(self, request_iterator: Any, context: Any) -> Any:
        async def read() -> None:
            async for message in request_iterator:
                await self.received.put(message)

        reader = asyncio.create_task(read())
        yield pb.CoordinatorMessage(welcome=pb.Welcome(device_name="t", heartbeat_seconds=-5))
        try:
            while True:
                yield await self.to_agent.get()
        finally:
            reader.cancel()


async def _next(queue: asyncio.Queue[pb.AgentMessage], kind: str, timeout: float = 15) -> Any:
    while True:
        message = await asyncio.wait_for(queue.get(), timeout)
        if message.WhichOneof("body") == kind:
            return getattr(message, kind)


def _assignment(run_id: str, sha256: str, size: int, spec: pb.RunSpec | None = None) -> Any:
    good = to_message(RunSpec(), pb.RunSpec())
    model = pb.ModelRef(sha256=sha256, filename="m.gguf", size_bytes=size, format="gguf")
    assignment = pb.RunAssignment(run_id=run_id, job_id="j", lease_epoch=1, lease_seconds=60,
                                  model=model, spec=spec or good)  # fmt: skip
    return pb.CoordinatorMessage(assignment=assignment)


def test_the_agent_refuses_a_lying_coordinator_and_keeps_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEBENCH_HOME", str(tmp_path / "home"))
    planted = tmp_path / "evil.gguf"

    async def scenario() -> None:
        liar = Liar()
        server = grpc.aio.server()
        pb_grpc.add_AgentServiceServicer_to_server(liar, server)
        port = server.add_insecure_port("127.0.0.1:0")  # loopback: plaintext is allowed
        await server.start()
        agent = Agent(Credential(f"127.0.0.1:{port}", "a", "s", "d", "t"))
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run_forever(stop))
        try:
            await _next(liar.received, "work_request")
            sent = time.monotonic()
            beats = [await _next(liar.received, "heartbeat") for _ in range(3)]
            assert len(beats) == 3 and time.monotonic() - sent >= 1.5  # clamped to >= 1 s
            path_like = str(planted.with_suffix(""))  # "/tmp/.../evil": a path, not a hash
            await liar.to_agent.put(_assignment("r1", path_like, 10))
            failure = await _next(liar.received, "failure")
            assert failure.run_id == "r1" and "not a sha256" in failure.error
            await _next(liar.received, "work_request")
            sha = hashlib.sha256(OVERSIZED).hexdigest()
            await liar.to_agent.put(_assignment("r2", sha, 10))
            failure = await _next(liar.received, "failure")
            assert "more than the model's declared 10 bytes" in failure.error
            await _next(liar.received, "work_request")
            nonsense = pb.RunSpec(backend="no-such-engine")
            await liar.to_agent.put(pb.CoordinatorMessage(cancel=pb.CancelRun(run_id="ghost")))
            await liar.to_agent.put(pb.CoordinatorMessage(ack=pb.ResultAck(result_id="ghost")))
            await liar.to_agent.put(_assignment("r3", sha, 10, nonsense))
            failure = await _next(liar.received, "failure")
            assert failure.run_id == "r3" and failure.error
            assert await _next(liar.received, "work_request")  # still serving
            assert not task.done()
        finally:
            stop.set()
            await task
            await server.stop(0)

    asyncio.run(scenario())
    assert not planted.exists()
    cache = tmp_path / "home" / "cache" / "models"
    assert not any(cache.glob("*.part"))  # the oversized download was deleted
