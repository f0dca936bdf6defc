"""The gRPC side of the coordinator: enrollment, agent sessions and artifact downloads.

Each connected agent has one session; the dispatcher pushes a run to an idle agent the
moment one is queued, so there is no polling interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

import grpc

from edgebench.coordinator.artifacts import CHUNK_BYTES, ArtifactError, ArtifactFiles, check_sha256
from edgebench.coordinator.jobspec import JobCreate
from edgebench.coordinator.settings import CoordinatorSettings
from edgebench.coordinator.store import (
    Claim,
    ClaimRequest,
    Conflict,
    NotFound,
    StaleLease,
    Store,
    StoreError,
)
from edgebench.coordinator.tables import Agent, Artifact, Device, Job, utcnow
from edgebench.coordinator.wire import (
    WireError,
    check_name,
    check_tags,
    check_uuid,
    hardware_dict,
    result_values,
)
from edgebench.measure.packing import pack_reps
from edgebench.proto.v1 import agent_pb2 as pb
from edgebench.proto.v1 import agent_pb2_grpc as pb_grpc

log = logging.getLogger("edgebench.coordinator")

AGENT_ID_KEY = "x-edgebench-agent-id"
AGENT_SECRET_KEY = "x-edgebench-agent-secret"


@dataclass
class AgentSession:
    agent: Agent
    device: Device
    outgoing: asyncio.Queue[pb.CoordinatorMessage] = field(default_factory=asyncio.Queue)
    # The agent's open WorkRequest: it is idle and has room for another result. Only
    # sessions with one get runs, so a busy agent or one with a full outbox gets none.
    request_id: str | None = None


class Dispatcher:
    """Hands queued runs to connected agents that asked for work. Lives on the event loop."""

    def __init__(self, store: Store, settings: CoordinatorSettings) -> None:
        self.store = store
        self.settings = settings
        self.sessions: dict[str, AgentSession] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._artifacts: dict[str, Artifact | None] = {}
        # Heartbeats since the last flush: {agent id: (device id, when)}, written together.
        self.seen: dict[str, tuple[str, datetime]] = {}
        self._specs: dict[str, JobCreate] = {}  # jobs never change once stored

    async def flush_seen(self) -> None:
        seen, self.seen = self.seen, {}
        await asyncio.to_thread(self.store.heard_from, seen)

    def _spec_of(self, job: Job) -> JobCreate:
        spec = self._specs.get(job.id)
        if spec is None:
            if len(self._specs) > 10_000:
                self._specs.clear()
            spec = self._specs[job.id] = JobCreate.model_validate_json(job.spec_json)
        return spec

    def kick(self) -> None:
        """Asks for a dispatch round soon. Rounds never overlap and wake-ups coalesce, and
        no session's reader waits for a round (it did: heartbeats queued behind it)."""
        self._wake.set()

    async def run_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.dispatch()
            except Exception:  # a database hiccup must not end dispatching
                log.exception("dispatch round failed")

    async def dispatch(self) -> None:
        """One round: every session with an open work request gets a run if one matches,
        all claimed in one store transaction."""
        async with self._lock:
            waiting = [s for s in self.sessions.values() if s.request_id is not None]
            if not waiting:
                return
            requests = [ClaimRequest(s.agent, s.device, s.request_id) for s in waiting]
            claims = await asyncio.to_thread(
                self.store.claim_runs, requests, self.settings.lease_seconds
            )
            for session, claim in zip(waiting, claims, strict=True):
                if claim is None:
                    continue
                session.request_id = None
                log.info("run %s leased to %s", claim.run.id, session.device.name)
                await self.send_assignment(session, claim)

    async def send_assignment(self, session: AgentSession, claim: Claim) -> None:
        sha = claim.run.model_sha256
        if sha not in self._artifacts:  # artifacts never change: read each once
            self._artifacts[sha] = await asyncio.to_thread(self.store.get_artifact, sha)
        assignment = assignment_for(
            claim, self._artifacts[sha], self._spec_of(claim.job), self.settings.lease_seconds
        )
        session.outgoing.put_nowait(pb.CoordinatorMessage(assignment=assignment))

    def cancel_runs(self, runs: list[tuple[str, str]]) -> None:
        """Tells the agents holding these (run id, agent id) pairs to stop them."""
        for run_id, agent_id in runs:
            session = self.sessions.get(agent_id)
            if session is not None:
                cancel = pb.CancelRun(run_id=run_id)
                session.outgoing.put_nowait(pb.CoordinatorMessage(cancel=cancel))


def refusal_code(exc: Exception) -> str:
    if isinstance(exc, StaleLease):
        return "FAILED_PRECONDITION"
    if isinstance(exc, Conflict):
        return "ALREADY_EXISTS"
    return "INVALID_ARGUMENT"


def assignment_for(
    claim: Claim, artifact: Artifact | None, spec: JobCreate, lease_seconds: int
) -> pb.RunAssignment:
    run = claim.run
    assignment = pb.RunAssignment(
        run_id=run.id,
        job_id=run.job_id,
        lease_epoch=run.lease_epoch,
        lease_seconds=lease_seconds,
        request_id=run.lease_request_id or "",
        model=pb.ModelRef(
            sha256=run.model_sha256,
            filename=artifact.filename if artifact else "",
            size_bytes=artifact.size_bytes if artifact else 0,
            format=artifact.format if artifact else "gguf",
        ),
        workload=pb.Workload(
            backend=run.backend,
            variant=run.variant,
            n_depth=run.n_depth,
            n_prompt=run.n_prompt,
            n_gen=run.n_gen,
            reps=spec.reps,
            warmup=spec.warmup,
            max_reps=spec.max_reps,
            max_seconds=spec.max_seconds,
            threads=spec.threads,
            sustained_seconds=spec.sustained_seconds,
            window_seconds=spec.window_seconds,
            n_batch=spec.n_batch,
            n_ubatch=spec.n_ubatch,
            n_gpu_layers=spec.n_gpu_layers,
            flash_attn=spec.flash_attn,
            provider=spec.provider,
            noisy_pct=spec.noisy_pct,
            idle_seconds=spec.idle_seconds,
            sample_hz=spec.sample_hz,
            cooldown_max_seconds=spec.cooldown_max_seconds,
        ),
    )
    if spec.cooldown_c is not None:
        assignment.workload.cooldown_c = spec.cooldown_c
    return assignment


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

    async def Enroll(
        self, request: pb.EnrollRequest, context: grpc.aio.ServicerContext
    ) -> pb.EnrollResponse:
        try:
            name = check_name(request.name or request.hardware.hostname)
            hardware = hardware_dict(request.hardware)
            tags = check_tags(dict(request.tags))
        except WireError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if not request.token:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "an enrollment token is required")
        try:
            enrollment = await asyncio.to_thread(
                self.store.enroll, token=request.token, name=name, hardware=hardware, tags=tags
            )
        except StoreError as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        log.info("enrolled agent %s for device %s", enrollment.agent_id, enrollment.device_name)
        return pb.EnrollResponse(
            agent_id=enrollment.agent_id,
            secret=enrollment.secret,
            device_id=enrollment.device_id,
            device_name=enrollment.device_name,
        )

    async def _authenticate(self, context: grpc.aio.ServicerContext) -> Agent:
        metadata = {item.key: item.value for item in context.invocation_metadata() or ()}
        agent_id = str(metadata.get(AGENT_ID_KEY, ""))
        secret = str(metadata.get(AGENT_SECRET_KEY, ""))
        agent = None
        if agent_id and secret:
            agent = await asyncio.to_thread(self.store.authenticate_agent, agent_id, secret)
        if agent is None:
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
            hardware = hardware_dict(first.hello.hardware)
        except WireError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        device = await asyncio.to_thread(self.store.agent_seen, agent, hardware)
        session = AgentSession(agent=agent, device=device)
        previous = self.dispatcher.sessions.get(agent.id)
        self.dispatcher.sessions[agent.id] = session
        log.info("agent %s (%s) connected", agent.id, device.name)
        yield pb.CoordinatorMessage(
            welcome=pb.Welcome(
                device_id=device.id,
                device_name=device.name,
                heartbeat_seconds=self.settings.heartbeat_seconds,
            )
        )
        if previous is not None:
            previous.outgoing.put_nowait(pb.CoordinatorMessage())  # wakes the old stream to end
        reader = asyncio.create_task(self._read(request_iterator, session))
        try:
            while True:
                getter = asyncio.ensure_future(session.outgoing.get())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    # The agent closed its side: send what is already queued (acks), then end.
                    while not session.outgoing.empty():
                        yield session.outgoing.get_nowait()
                    break
                message = getter.result()
                if not message.WhichOneof("body"):
                    break  # replaced by a newer session of the same agent
                yield message
        finally:
            reader.cancel()
            if self.dispatcher.sessions.get(agent.id) is session:
                del self.dispatcher.sessions[agent.id]
                log.info("agent %s (%s) disconnected", agent.id, device.name)

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

    async def _on_work_request(self, session: AgentSession, request: pb.WorkRequest) -> None:
        try:
            request_id = check_uuid(request.request_id, "request_id")
        except WireError as exc:
            log.warning("work request from %s ignored: %s", session.device.name, exc)
            return
        earlier = await asyncio.to_thread(self._answer_request, session, request_id)
        if earlier is not None:  # the answer was lost on the wire: the same lease again
            await self.dispatcher.send_assignment(session, earlier)
            return
        session.request_id = request_id
        self.dispatcher.kick()

    def _answer_request(self, session: AgentSession, request_id: str) -> Claim | None:
        """The lease this request already got, if any; otherwise any lease the agent still
        holds was lost on its side (it restarted), so it is requeued now."""
        earlier, released = self.store.answer_work_request(session.agent.id, request_id)
        if released:
            log.warning("agent %s asked for work while holding %d run(s): requeued",
                        session.device.name, released)  # fmt: skip
        return earlier

    async def _lease_alive(
        self,
        session: AgentSession,
        run_id: str,
        epoch: int,
        phase: str | None = None,
        rep: int | None = None,
    ) -> None:
        alive = await asyncio.to_thread(
            self.store.extend_lease,
            agent_id=session.agent.id,
            run_id=run_id,
            epoch=epoch,
            lease_seconds=self.settings.lease_seconds,
            phase=phase,
            rep=rep,
        )
        if not alive:
            # Stale or cancelled lease: the agent must stop working on it.
            reason = f"FAILED_PRECONDITION: lease epoch {epoch} of run {run_id} is not current"
            cancel = pb.CancelRun(run_id=run_id, reason=reason)
            session.outgoing.put_nowait(pb.CoordinatorMessage(cancel=cancel))

    async def _on_heartbeat(self, session: AgentSession, beat: pb.Heartbeat) -> None:
        self.dispatcher.seen[session.agent.id] = (session.device.id, utcnow())
        if beat.run_id:
            await self._lease_alive(session, beat.run_id, beat.lease_epoch)
        ack = pb.HeartbeatAck(seq=beat.seq)
        session.outgoing.put_nowait(pb.CoordinatorMessage(heartbeat_ack=ack))

    async def _on_progress(self, session: AgentSession, progress: pb.RunProgress) -> None:
        await self._lease_alive(
            session,
            progress.run_id,
            progress.lease_epoch,
            phase=progress.phase[:32] or "running",
            rep=max(0, progress.rep),
        )

    async def _on_result(self, session: AgentSession, result: pb.RunResult) -> None:
        error, code = "", ""
        try:
            result_id = check_uuid(result.result_id, "result_id")
            values, timings = result_values(result.metrics)
            await asyncio.to_thread(
                self.store.store_result,
                agent_id=session.agent.id,
                result_id=result_id,
                run_id=result.run_id,
                epoch=result.lease_epoch,
                values=values,
                timings=pack_reps(timings),
            )
        except (WireError, StoreError) as exc:
            error, code = str(exc), refusal_code(exc)
            log.warning("result %s from %s refused: %s", result.result_id, session.device.name, exc)
        ack = pb.ResultAck(result_id=result.result_id, accepted=not error, error=error, code=code)
        session.outgoing.put_nowait(pb.CoordinatorMessage(ack=ack))

    async def _on_failure(self, session: AgentSession, failure: pb.RunFailure) -> None:
        await asyncio.to_thread(
            self.store.fail_run,
            agent_id=session.agent.id,
            run_id=failure.run_id,
            epoch=failure.lease_epoch,
            error=failure.error,
        )

    async def FetchArtifact(
        self, request: pb.FetchArtifactRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ArtifactChunk]:
        await self._authenticate(context)
        try:
            path = self.artifacts.path_for(check_sha256(request.sha256))
        except ArtifactError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
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


__all__ = ["AgentService", "Dispatcher", "NotFound"]
