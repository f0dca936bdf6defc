"""The gRPC side of the coordinator: enrollment, agent sessions and artifact downloads.

Each connected agent has one session; the dispatcher pushes a run to an idle agent the
moment one is queued, so there is no polling interval.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import grpc

from edgebench.coordinator import scheduler
from edgebench.coordinator.artifacts import CHUNK_BYTES, ArtifactError, ArtifactFiles, check_sha256
from edgebench.coordinator.errors import Conflict, NotFound, StaleLease, StoreError
from edgebench.coordinator.scheduler import Claim, ClaimRequest, LeaseTouch, ResultIn
from edgebench.coordinator.settings import CoordinatorSettings
from edgebench.coordinator.store import Store, device_seen
from edgebench.coordinator.tables import Agent, Artifact, Device, Job, Run, utcnow
from edgebench.coordinator.wire import (
    WireError,
    check_name,
    check_tags,
    check_uuid,
    hardware_of,
    result_values,
)
from edgebench.coordinator.writer import StoreWriter
from edgebench.dashboard.models import JobCreate
from edgebench.measure.packing import pack_reps
from edgebench.proto.convert import to_message
from edgebench.proto.v1 import agent_pb2 as pb
from edgebench.proto.v1 import agent_pb2_grpc as pb_grpc
from edgebench.protocol import AGENT_ID_KEY, AGENT_SECRET_KEY
from edgebench.workload import RunSpec, TestMatrix

log = logging.getLogger("edgebench.coordinator")

ROUND_GATHER_SECONDS = 0.02
TOUCH_CHUNK = 250  # lease touches per transaction (see Dispatcher.flush_touches)


@dataclass
class AgentSession:
    agent: Agent
    device: Device
    outgoing: asyncio.Queue[pb.CoordinatorMessage] = field(default_factory=asyncio.Queue)
    # The agent's open WorkRequest: it is idle and has room for another result. Only
    # sessions with one get runs, so a busy agent or one with a full outbox gets none.
    request_id: str | None = None
    request_checked: bool = False  # a round already looked for leases it holds
    # Results and failures being written, with their run ids: acks go out when the writer
    # has committed them; a dispatch round meanwhile leaves those runs alone (the agent
    # is done with them, they are not leases it lost).
    storing: dict[asyncio.Future[Any], str] = field(default_factory=dict)
    # Runs this session reported done: a touch of theirs written after the result is no
    # stale lease (the agent has moved on), so it gets no CancelRun.
    finished: deque[str] = field(default_factory=lambda: deque(maxlen=8))


class Dispatcher:
    """Hands queued runs to connected agents that asked for work. Lives on the event loop;
    its store writes go through the writer thread."""

    def __init__(self, store: Store, settings: CoordinatorSettings) -> None:
        self.store = store
        self.settings = settings
        # Three writers, so that what an agent waits for never queues behind a bigger
        # write (on PostgreSQL they write at once; on SQLite they take turns): results,
        # failures and hellos; dispatch rounds; and housekeeping that no agent waits on
        # (lease touches, last-seen times, reaps: a flush of 2,000 touches took 0.1-0.3 s
        # and held results back, benchmarks/fleet.py).
        self.writer = StoreWriter(store, vectors=[scheduler.store_results])
        self.rounds = StoreWriter(store)
        self.housekeeping = StoreWriter(store)
        # Touches waiting for the next flush: {run id: {(agent id, epoch): (session, touch)}}
        self._touches: dict[str, dict[tuple[str, int], tuple[AgentSession, LeaseTouch]]] = {}
        self.sessions: dict[str, AgentSession] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._artifacts: dict[str, Artifact | None] = {}
        # Heartbeats since the last flush: {agent id: (device id, when)}, written together.
        self.seen: dict[str, tuple[str, datetime]] = {}
        self._specs: dict[str, JobCreate] = {}  # jobs never change once stored
        # Fair share's runs in flight, counted once a second (only the rounds writer uses it)
        self._in_flight = scheduler.InFlightCounts()

    def start_writers(self) -> None:
        for writer in (self.writer, self.rounds, self.housekeeping):
            writer.start()

    async def stop_writers(self) -> None:
        """Commits what is queued, then ends the writers' threads."""
        for writer in (self.rounds, self.writer, self.housekeeping):
            await writer.stop()

    async def flush_seen(self) -> None:
        seen, self.seen = self.seen, {}
        if seen:
            await self.housekeeping.call(functools.partial(scheduler.heard_from, seen=seen))

    def touch(self, session: AgentSession, touch: LeaseTouch) -> None:
        """Keeps the newest heartbeat or progress of a lease for the next flush (a
        heartbeat keeps the phase that progress reported)."""
        leases = self._touches.setdefault(touch.run_id, {})
        earlier = leases.get((touch.agent_id, touch.epoch))
        if earlier is not None and touch.phase is None:
            touch = earlier[1]
        leases[(touch.agent_id, touch.epoch)] = (session, touch)

    def forget_touches(self, run_id: str) -> None:
        """The run's result or failure came: it supersedes what the run reported before."""
        self._touches.pop(run_id, None)

    async def flush_touches_forever(self) -> None:
        """Heartbeats and progress are written together (the newest of each lease) every
        settings.touch_flush_seconds: a lease lasts far longer, and one write of them all
        costs a fraction of a write each (benchmarks/fleet.py)."""
        while True:
            await asyncio.sleep(self.settings.touch_flush_seconds)
            try:
                await self.flush_touches()
            except Exception:  # a database hiccup: the agents' next touches try again
                log.exception("writing heartbeats and progress failed")

    async def flush_touches(self) -> None:
        """Extends every lease touched since the last flush; an agent whose lease is no
        longer current (stale epoch, cancelled, reaped) is told to stop. Written in
        chunks, a transaction each: a transaction holds its rows locked to the end, and a
        result for one of them waits (one flush of 2,000 held results back 0.2-1.2 s on
        PostgreSQL, benchmarks/fleet.py)."""
        pending = [entry for leases in self._touches.values() for entry in leases.values()]
        self._touches = {}
        for start in range(0, len(pending), TOUCH_CHUNK):
            chunk = pending[start : start + TOUCH_CHUNK]
            alive = await self.housekeeping.call(
                functools.partial(
                    scheduler.touch_leases,
                    touches=[touch for _, touch in chunk],
                    lease_seconds=self.settings.lease_seconds,
                )
            )
            for (session, touch), current in zip(chunk, alive, strict=True):
                if not current and touch.run_id not in session.finished:
                    reason = f"FAILED_PRECONDITION: lease epoch {touch.epoch} of run {touch.run_id}"
                    cancel = pb.CancelRun(run_id=touch.run_id, reason=reason + " is not current")
                    session.outgoing.put_nowait(pb.CoordinatorMessage(cancel=cancel))

    async def reap(self) -> None:
        retry_base = self.settings.retry_base_seconds
        await self.housekeeping.call(
            functools.partial(scheduler.reap_expired, retry_base_seconds=retry_base)
        )

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
        loop = asyncio.get_running_loop()
        last_round = 0.0
        while True:
            await self._wake.wait()
            # Requests that come in the next moment join this round: a round costs the
            # same for one request or fifty (benchmarks/fleet.py: fewer rounds, less CPU).
            # After a round longer than that, requests have gathered meanwhile.
            if last_round < ROUND_GATHER_SECONDS:
                await asyncio.sleep(ROUND_GATHER_SECONDS)
            self._wake.clear()
            started = loop.time()
            try:
                await self.dispatch()
            except Exception:  # a database hiccup must not end dispatching
                log.exception("dispatch round failed")
            last_round = loop.time() - started

    async def dispatch(self) -> None:
        """One round: every session with an open work request gets a run if one matches,
        all claimed in one store transaction."""
        async with self._lock:
            waiting = [s for s in self.sessions.values() if s.request_id is not None]
            if not waiting:
                return
            requests = [
                ClaimRequest(s.agent, s.device, s.request_id, check_held=not s.request_checked,
                             finishing=frozenset(s.storing.values()))
                for s in waiting
            ]  # fmt: skip
            claim_runs = functools.partial(
                scheduler.claim_runs,
                requests=requests,
                lease_seconds=self.settings.lease_seconds,
                retry_base_seconds=self.settings.retry_base_seconds,
                in_flight=self._in_flight,
            )
            claims = await self.rounds.call(claim_runs)
            for session, request, claim in zip(waiting, requests, claims, strict=True):
                if session.request_id != request.request_id:
                    continue  # asked again meanwhile: the next round answers that
                session.request_checked = True
                if claim is None:
                    continue
                session.request_id = None
                log.debug("run %s leased to %s", claim.run.id, session.device.name)
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


def _checked_result(metrics: pb.Metrics) -> tuple[dict[str, Any], bytes]:
    values, timings = result_values(metrics)
    return values, pack_reps(timings)


def refusal_code(exc: BaseException) -> str:
    if isinstance(exc, StaleLease):
        return "FAILED_PRECONDITION"
    if isinstance(exc, Conflict):
        return "ALREADY_EXISTS"
    return "INVALID_ARGUMENT"


def assignment_for(
    claim: Claim, artifact: Artifact | None, spec: JobCreate, lease_seconds: int
) -> pb.RunAssignment:
    run = claim.run
    return pb.RunAssignment(
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
        spec=to_message(run_spec(run, spec), pb.RunSpec()),
    )


def run_spec(run: Run, job: JobCreate) -> RunSpec:
    """A run's spec: its job's workload with the one test this run measures."""
    test = TestMatrix(n_prompt=[run.n_prompt], n_gen=[run.n_gen], n_depth=[run.n_depth])
    workload = job.workload.model_copy(update={"tests": test})
    return RunSpec(backend=run.backend, variant=run.variant, workload=workload)


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
        self.writer = dispatcher.writer
        self.settings = settings

    async def Enroll(
        self, request: pb.EnrollRequest, context: grpc.aio.ServicerContext
    ) -> pb.EnrollResponse:
        try:
            hardware = hardware_of(request.hardware)
            name = check_name(request.name or hardware.identity.hostname)
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
            hardware = hardware_of(first.hello.hardware)
        except WireError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        seen = functools.partial(device_seen, agent=agent, hardware=hardware)
        device = await self.writer.call(seen)
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
        # The agent closed its side: what is already queued (acks) goes out, then the end.
        reader.add_done_callback(lambda _: session.outgoing.put_nowait(pb.CoordinatorMessage()))
        try:
            while True:
                message = await session.outgoing.get()
                if not message.WhichOneof("body"):
                    break  # the end: the reader stopped, or a newer session replaced this one
                yield message
        finally:
            reader.cancel()
            if reader.done() and not reader.cancelled() and reader.exception() is not None:
                log.error("session of %s failed", device.name, exc_info=reader.exception())
            for storing in list(session.storing):
                storing.cancel()  # stored or not, the agent sends it again after a reconnect
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
        """The agent is idle: the next dispatch round answers it (with the lease this
        request id already got, if its answer was lost on the wire, or a new one)."""
        try:
            request_id = check_uuid(request.request_id, "request_id")
        except WireError as exc:
            log.warning("work request from %s ignored: %s", session.device.name, exc)
            return
        if request_id != session.request_id:
            session.request_id, session.request_checked = request_id, False
        self.dispatcher.kick()

    async def _on_heartbeat(self, session: AgentSession, beat: pb.Heartbeat) -> None:
        self.dispatcher.seen[session.agent.id] = (session.device.id, utcnow())
        if beat.run_id:
            touch = LeaseTouch(session.agent.id, beat.run_id, beat.lease_epoch)
            self.dispatcher.touch(session, touch)
        # The ack says "heard"; a stale lease is answered by a CancelRun after the write.
        ack = pb.HeartbeatAck(seq=beat.seq)
        session.outgoing.put_nowait(pb.CoordinatorMessage(heartbeat_ack=ack))

    async def _on_progress(self, session: AgentSession, progress: pb.RunProgress) -> None:
        phase, rep = progress.phase[:32] or "running", max(0, progress.rep)
        touch = LeaseTouch(session.agent.id, progress.run_id, progress.lease_epoch, phase, rep)
        self.dispatcher.touch(session, touch)

    async def _on_result(self, session: AgentSession, result: pb.RunResult) -> None:
        """Queued for the writer at once (before this agent's next message is read, so a
        work request that follows is answered after it), acknowledged after the commit."""
        try:
            item = ResultIn(
                session.agent.id,
                check_uuid(result.result_id, "result_id"),
                result.run_id,
                result.lease_epoch,
                *_checked_result(result.metrics),
            )
        except WireError as exc:
            self._acknowledge(session, result.result_id, exc)
            return
        self.dispatcher.forget_touches(item.run_id)
        session.finished.append(item.run_id)
        stored = self.writer.submit_item(scheduler.store_results, item)
        session.storing[stored] = item.run_id
        stored.add_done_callback(functools.partial(self._after_store, session, result.result_id))

    def _after_store(
        self, session: AgentSession, result_id: str, stored: asyncio.Future[None]
    ) -> None:
        self._written(session, stored)
        if stored.cancelled():
            return
        error = stored.exception()
        if error is not None and not isinstance(error, StoreError):
            # Not a refusal (the database failed): no ack, so the agent keeps the result
            # in its outbox; ending the session makes it send the result again.
            log.error("result %s could not be stored: %s", result_id, error)
            session.outgoing.put_nowait(pb.CoordinatorMessage())
            return
        self._acknowledge(session, result_id, error)

    @staticmethod
    def _acknowledge(session: AgentSession, result_id: str, error: BaseException | None) -> None:
        code = "" if error is None else refusal_code(error)
        if error is not None:
            log.warning("result %s from %s refused: %s", result_id, session.device.name, error)
        ack = pb.ResultAck(result_id=result_id, accepted=error is None, error=str(error or ""),
                           code=code)  # fmt: skip
        session.outgoing.put_nowait(pb.CoordinatorMessage(ack=ack))

    async def _on_failure(self, session: AgentSession, failure: pb.RunFailure) -> None:
        self.dispatcher.forget_touches(failure.run_id)
        session.finished.append(failure.run_id)
        failed = self.writer.submit(
            functools.partial(
                scheduler.fail_run,
                agent_id=session.agent.id,
                run_id=failure.run_id,
                epoch=failure.lease_epoch,
                error=failure.error,
            )
        )
        session.storing[failed] = failure.run_id
        failed.add_done_callback(functools.partial(self._written, session))

    def _written(self, session: AgentSession, write: asyncio.Future[Any]) -> None:
        session.storing.pop(write, None)

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
