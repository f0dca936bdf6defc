"""The gRPC servicer: authentication, status codes, protobuf in and out. What a message
means for the fleet is the Dispatcher's (dispatch.py); checking and converting messages
is wire.py's."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator

import grpc

from edgebench import __version__
from edgebench.coordinator import telemetry
from edgebench.coordinator.artifacts import CHUNK_BYTES, ArtifactError, ArtifactFiles, check_sha256
from edgebench.coordinator.dispatch import AgentSession, Dispatcher
from edgebench.coordinator.errors import Conflict, NotFound, StaleLease, StoreError
from edgebench.coordinator.lifecycle import FAILURE_KINDS, LeaseTouch, ResultIn
from edgebench.coordinator.settings import CoordinatorSettings
from edgebench.coordinator.store import Store
from edgebench.coordinator.tables import Agent
from edgebench.coordinator.throttle import FailureBudget, peer_address
from edgebench.coordinator.wire import (
    WireError,
    check_name,
    check_tags,
    check_uuid,
    checked_result,
    hardware_of,
)
from edgebench.proto.v1 import agent_pb2 as pb
from edgebench.proto.v1 import agent_pb2_grpc as pb_grpc
from edgebench.protocol import AGENT_ID_KEY, AGENT_SECRET_KEY, MIN_AGENT_VERSION, too_old

log = logging.getLogger("edgebench.coordinator")
# malformed messages (refused results, bad work requests) a session may send before it is
# ended: an honest agent sends none
MAX_BOGUS_PER_SESSION = 50


def refusal_code(exc: BaseException) -> str:
    if isinstance(exc, StaleLease):
        return "FAILED_PRECONDITION"
    if isinstance(exc, Conflict):
        return "ALREADY_EXISTS"
    return "INVALID_ARGUMENT"


class AgentService(pb_grpc.AgentServiceServicer):
    def __init__(
        self,
        store: Store,
        artifacts: ArtifactFiles,
        dispatcher: Dispatcher,
        settings: CoordinatorSettings,
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.dispatcher = dispatcher
        self.settings = settings
        self.failures = FailureBudget()

    async def Enroll(
        self, request: pb.EnrollRequest, context: grpc.aio.ServicerContext
    ) -> pb.EnrollResponse:
        try:
            hardware = hardware_of(request.hardware)
            name = check_name(request.name or hardware.identity.hostname)
            tags = check_tags(dict(request.tags))
        except WireError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        address = await self._not_over_budget(context)
        if not request.token:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "an enrollment token is required")
        try:
            enrollment = await asyncio.to_thread(
                self.store.enroll,
                token=request.token,
                name=name,
                hardware=hardware,
                tags=tags,
                require_approval=self.settings.require_approval,
            )
        except StoreError as exc:
            self.failures.failed(address)
            telemetry.AUTH_FAILURES.inc()
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        log.info("enrolled agent %s for device %s", enrollment.agent_id, enrollment.device_name)
        return pb.EnrollResponse(
            agent_id=enrollment.agent_id,
            secret=enrollment.secret,
            device_id=enrollment.device_id,
            device_name=enrollment.device_name,
        )

    async def _not_over_budget(self, context: grpc.aio.ServicerContext) -> str:
        """The caller's address, once it may try to authenticate (throttle.py)."""
        address = peer_address(context.peer())
        wait = self.failures.wait_seconds(address)
        if wait:
            context.set_trailing_metadata((("retry-after", str(wait)),))
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many failed attempts from {address}: try again in {wait} s",
            )
        return address

    async def _authenticate(self, context: grpc.aio.ServicerContext) -> Agent:
        address = await self._not_over_budget(context)
        metadata = {item.key: item.value for item in context.invocation_metadata() or ()}
        agent_id = str(metadata.get(AGENT_ID_KEY, ""))
        secret = str(metadata.get(AGENT_SECRET_KEY, ""))
        agent = None
        if agent_id and secret:
            agent = await asyncio.to_thread(self.store.authenticate_agent, agent_id, secret)
        if agent is None:
            self.failures.failed(address)
            telemetry.AUTH_FAILURES.inc()
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "unknown agent or wrong secret: enroll again"
            )
        assert agent is not None
        return agent

    async def Session(
        self,
        request_iterator: AsyncIterator[pb.AgentMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.CoordinatorMessage]:
        agent = await self._authenticate(context)
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("body") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a session starts with hello")
        assert first is not None
        try:
            hardware = hardware_of(first.hello.hardware)
        except WireError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        version = hardware.capabilities.edgebench_version
        if too_old(version):
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this agent runs edgebench {version}; this "
                f"coordinator (edgebench {__version__}) serves agents from "
                f"{MIN_AGENT_VERSION} on: install edgebench {__version__} on the agent",
            )
        session, _ = await self.dispatcher.connect(agent, hardware)
        device = session.device
        yield pb.CoordinatorMessage(
            welcome=pb.Welcome(
                device_id=device.id,
                device_name=device.name,
                heartbeat_seconds=self.settings.heartbeat_seconds,
            )
        )
        reader = asyncio.create_task(self._read(request_iterator, session))
        # The agent closed its side: what is already queued (acks) goes out, then the end.
        reader.add_done_callback(lambda _: session.outgoing.put_nowait(pb.CoordinatorMessage()))
        try:
            while True:
                message = await session.outgoing.get()
                if not message.WhichOneof("body"):
                    break  # the end: the reader stopped, or a newer session replaced this one
                yield message
            if session.ended_because:
                code = grpc.StatusCode[session.ended_with]
                await context.abort(code, session.ended_because)
        finally:
            reader.cancel()
            if reader.done() and not reader.cancelled() and reader.exception() is not None:
                log.error("session of %s failed", device.name, exc_info=reader.exception())
            self.dispatcher.disconnect(session)

    async def _read(
        self, request_iterator: AsyncIterator[pb.AgentMessage], session: AgentSession
    ) -> None:
        async for message in request_iterator:
            kind = message.WhichOneof("body")
            if kind == "heartbeat":
                await self._on_heartbeat(session, message.heartbeat)
            elif kind == "progress":
                await self._on_progress(session, message.progress)
            elif kind == "result":
                await self._on_result(session, message.result)
            elif kind == "failure":
                await self._on_failure(session, message.failure)
            elif kind == "work_request":
                await self._on_work_request(session, message.work_request)
            else:  # nothing we know, or a message that did not parse (parsing.py)
                self._count_bogus(session)

    async def _on_work_request(self, session: AgentSession, request: pb.WorkRequest) -> None:
        """The agent is idle: the next dispatch round answers it (with the lease this
        request id already got, if its answer was lost on the wire, or a new one)."""
        try:
            request_id = check_uuid(request.request_id, "request_id")
        except WireError as exc:
            log.warning("work request from %s ignored: %s", session.device.name, exc)
            self._count_bogus(session)
            return
        self.dispatcher.want_work(session, request_id)

    async def _on_heartbeat(self, session: AgentSession, beat: pb.Heartbeat) -> None:
        self.dispatcher.heard(session, beat.run_id, beat.lease_epoch)
        # The ack says "heard"; a stale lease is answered by a CancelRun after the write.
        ack = pb.HeartbeatAck(seq=beat.seq)
        session.outgoing.put_nowait(pb.CoordinatorMessage(heartbeat_ack=ack))

    async def _on_progress(self, session: AgentSession, progress: pb.RunProgress) -> None:
        phase, rep = progress.phase[:32] or "running", max(0, progress.rep)
        touch = LeaseTouch(session.agent.id, progress.run_id, progress.lease_epoch, phase, rep)
        self.dispatcher.progressed(session, touch)

    async def _on_result(self, session: AgentSession, result: pb.RunResult) -> None:
        """Queued for the writer at once (before this agent's next message is read, so a
        work request that follows is answered after it), acknowledged after the commit."""
        try:
            item = ResultIn(
                session.agent.id,
                check_uuid(result.result_id, "result_id"),
                result.run_id,
                result.lease_epoch,
                *checked_result(result.metrics, session.logical_cpus),
            )
        except WireError as exc:
            self._acknowledge(session, result.result_id, exc)
            self._count_bogus(session)
            return
        stored = self.dispatcher.store_result(session, item)
        stored.add_done_callback(functools.partial(self._after_store, session, result.result_id))

    @staticmethod
    def _count_bogus(session: AgentSession) -> None:
        """A session that keeps sending what cannot be taken is ended (the agent may open
        another after its backoff): one hostile agent costs the coordinator little."""
        session.bogus += 1
        if session.bogus == MAX_BOGUS_PER_SESSION:
            session.end(f"{MAX_BOGUS_PER_SESSION} malformed messages", "RESOURCE_EXHAUSTED")

    def _after_store(
        self, session: AgentSession, result_id: str, stored: asyncio.Future[None]
    ) -> None:
        if stored.cancelled():
            return
        error = stored.exception()
        if error is not None and not isinstance(error, StoreError):
            # Not a refusal (the database failed): no ack, so the agent keeps the result
            # in its outbox; ending the session makes it send the result again.
            log.error("result %s could not be stored: %s", result_id, error)
            telemetry.STORE_ERRORS.inc()
            session.outgoing.put_nowait(pb.CoordinatorMessage())
            return
        self._acknowledge(session, result_id, error)

    @staticmethod
    def _acknowledge(session: AgentSession, result_id: str, error: BaseException | None) -> None:
        code = "" if error is None else refusal_code(error)
        if error is None:
            telemetry.RESULTS_STORED.inc()
        else:
            telemetry.RESULTS_REFUSED.labels(code).inc()
            log.warning("result %s from %s refused: %s", result_id, session.device.name, error)
        ack = pb.ResultAck(result_id=result_id, accepted=error is None, error=str(error or ""),
                           code=code)  # fmt: skip
        session.outgoing.put_nowait(pb.CoordinatorMessage(ack=ack))

    async def _on_failure(self, session: AgentSession, failure: pb.RunFailure) -> None:
        self.dispatcher.store_failure(
            session, failure.run_id, failure.lease_epoch, failure.error,
            kind=failure.kind if failure.kind in FAILURE_KINDS else "device",
        )  # fmt: skip

    async def RotateSecret(
        self, request: pb.RotateSecretRequest, context: grpc.aio.ServicerContext
    ) -> pb.RotateSecretResponse:
        agent = await self._authenticate(context)
        secret = await asyncio.to_thread(self.store.rotate_secret, agent.id)
        log.info("agent %s has a new secret", agent.id)
        return pb.RotateSecretResponse(secret=secret)

    async def FetchArtifact(
        self, request: pb.FetchArtifactRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ArtifactChunk]:
        agent = await self._authenticate(context)
        try:
            path = self.artifacts.path_for(check_sha256(request.sha256))
        except ArtifactError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if not await asyncio.to_thread(self.store.holds_model, agent.id, request.sha256):
            # a model is served to the agent a live lease sends it to, and to no other
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this agent holds no run of model {request.sha256[:12]}",
            )
        if not path.is_file():
            known = await asyncio.to_thread(self.store.get_artifact, request.sha256)
            detail = f"no artifact {request.sha256}"
            if known is not None:  # in the database, not on this coordinator's disk
                detail += (" in this coordinator's artifact folder: coordinators that share a"
                           " database must share --artifact-dir")  # fmt: skip
            await context.abort(grpc.StatusCode.NOT_FOUND, detail)
        total = path.stat().st_size
        if not 0 <= request.offset <= total:
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, "offset is past the end")
        with path.open("rb") as handle:
            handle.seek(request.offset)
            offset = request.offset
            while data := handle.read(CHUNK_BYTES):
                yield pb.ArtifactChunk(offset=offset, data=data, total_size=total)
                offset += len(data)


__all__ = ["AgentService", "NotFound"]
