"""The connected agents and what they asked for, owned by one object: the Dispatcher
keeps a session per agent, their open work requests, lease touches and the writes still
in flight, and pushes a run to an idle agent the moment one is queued (no polling). It
lives on the event loop; its store writes go through writer threads. The servicer
(service.py) calls its methods and never touches its state."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from edgebench.coordinator import lifecycle, telemetry, verification
from edgebench.coordinator.lifecycle import Claim, ClaimRequest, LeaseTouch, ResultIn
from edgebench.coordinator.settings import CoordinatorSettings
from edgebench.coordinator.store import Store, device_seen
from edgebench.coordinator.tables import Agent, Artifact, Device, Job, identity_of, utcnow
from edgebench.coordinator.verification import VerifyPolicy
from edgebench.coordinator.wire import assignment_for
from edgebench.coordinator.writer import StoreWriter
from edgebench.dashboard.models import JobCreate
from edgebench.device import HardwareInfo
from edgebench.proto.v1 import agent_pb2 as pb

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
    requested_at: float = 0.0  # when the open request came (time.monotonic)
    # Results and failures being written, with their run ids: acks go out when the writer
    # has committed them; a dispatch round meanwhile leaves those runs alone (the agent
    # is done with them, they are not leases it lost).
    storing: dict[asyncio.Future[Any], str] = field(default_factory=dict)
    # Runs this session reported done: a touch of theirs written after the result is no
    # stale lease (the agent has moved on), so it gets no CancelRun.
    finished: deque[str] = field(default_factory=lambda: deque(maxlen=8))
    # why the coordinator ended this session on its own ("" = it did not): the stream
    # then ends with `ended_with` and this reason
    ended_because: str = ""
    ended_with: str = "UNAUTHENTICATED"  # a grpc.StatusCode name
    bogus: int = 0  # messages refused as malformed in this session

    def end(self, reason: str, code: str = "UNAUTHENTICATED") -> None:
        """Ends the session from the coordinator's side, with a status the agent reads."""
        self.ended_because, self.ended_with = reason, code
        self.outgoing.put_nowait(pb.CoordinatorMessage())

    @property
    def logical_cpus(self) -> int:
        """The device's logical CPUs as it reported them (0 when unknown)."""
        return identity_of(self.device).cpu_cores_logical


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
        self.writer = StoreWriter(store, vectors=[lifecycle.store_results])
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
        self._in_flight = lifecycle.InFlightCounts()
        self._revocations_seen_at = utcnow()  # revoked before: refused at authentication

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
            await self.housekeeping.call(functools.partial(lifecycle.heard_from, seen=seen))

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
                await self.end_revoked_sessions()
            except Exception:  # a database hiccup: the agents' next touches try again
                log.exception("writing heartbeats and progress failed")

    async def end_revoked_sessions(self) -> None:
        """Ends the live sessions of devices revoked since the last look (by any
        coordinator sharing the store): within a heartbeat of `devices revoke`."""
        since, self._revocations_seen_at = self._revocations_seen_at, utcnow()
        margin = timedelta(seconds=5)  # clocks of coordinators sharing a store differ
        revoked = await asyncio.to_thread(self.store.revoked_since, since - margin)
        for session in list(self.sessions.values()):
            if session.device.id in revoked:
                session.end(f"device {session.device.name} was revoked")

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
                    lifecycle.touch_leases,
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
            functools.partial(lifecycle.reap_expired, retry_base_seconds=retry_base)
        )

    async def verify(self) -> None:
        """A verification round (coordinator/verification.py); new replication runs go
        out in the next dispatch round."""
        policy = VerifyPolicy(band=self.settings.verify_band)
        done = await self.housekeeping.call(functools.partial(verification.verify, policy=policy))
        for result_id, state in done.judged.items():
            log.info("result %s is %s after replication", result_id, state)
        for result_id in done.quarantined:
            log.warning("result %s quarantined: implausible", result_id)
        for name in done.suspended:
            log.warning("device %s suspended: too many disputed results", name)

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
                telemetry.STORE_ERRORS.inc()
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
                lifecycle.claim_runs,
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
                telemetry.DISPATCH_SECONDS.observe(time.monotonic() - session.requested_at)

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

    # ---- what the servicer reports --------------------------------------------------

    async def connect(self, agent: Agent, hardware: HardwareInfo) -> tuple[AgentSession, bool]:
        """A session opened: the device's identity and capabilities are stored, and this
        session replaces an older one of the same agent (told to end). Returns the session
        and whether it replaced one."""
        seen = functools.partial(device_seen, agent=agent, hardware=hardware)
        device = await self.writer.call(seen)
        session = AgentSession(agent=agent, device=device)
        previous = self.sessions.get(agent.id)
        self.sessions[agent.id] = session
        if previous is not None:
            previous.outgoing.put_nowait(pb.CoordinatorMessage())  # wakes the old stream to end
        log.info("agent %s (%s) connected", agent.id, device.name)
        return session, previous is not None

    def disconnect(self, session: AgentSession) -> None:
        for storing in list(session.storing):
            storing.cancel()  # stored or not, the agent sends it again after a reconnect
        if self.sessions.get(session.agent.id) is session:
            del self.sessions[session.agent.id]
            log.info("agent %s (%s) disconnected", session.agent.id, session.device.name)

    def want_work(self, session: AgentSession, request_id: str) -> None:
        """The agent is idle: the next round answers (with the lease this request id
        already got, if its answer was lost on the wire, or a new one)."""
        if request_id != session.request_id:
            session.request_id, session.request_checked = request_id, False
            session.requested_at = time.monotonic()
        self.kick()

    def heard(self, session: AgentSession, run_id: str, epoch: int) -> None:
        self.seen[session.agent.id] = (session.device.id, utcnow())
        if run_id:
            self.touch(session, LeaseTouch(session.agent.id, run_id, epoch))

    def progressed(self, session: AgentSession, touch: LeaseTouch) -> None:
        self.touch(session, touch)

    def store_result(self, session: AgentSession, item: ResultIn) -> asyncio.Future[None]:
        """Queued for the writer at once (so a work request that follows is answered
        after it); the future settles after the commit."""
        self.forget_touches(item.run_id)
        session.finished.append(item.run_id)
        stored: asyncio.Future[None] = self.writer.submit_item(lifecycle.store_results, item)
        self._track(session, stored, item.run_id)
        return stored

    def store_failure(
        self, session: AgentSession, run_id: str, epoch: int, error: str, *, kind: str = "device"
    ) -> None:
        self.forget_touches(run_id)
        session.finished.append(run_id)
        failed = self.writer.submit(
            functools.partial(lifecycle.fail_run, agent_id=session.agent.id, run_id=run_id,
                              epoch=epoch, error=error, kind=kind)
        )  # fmt: skip
        self._track(session, failed, run_id)

    def _track(self, session: AgentSession, write: asyncio.Future[Any], run_id: str) -> None:
        """A round meanwhile leaves the run alone; once written, it is forgotten."""
        session.storing[write] = run_id
        write.add_done_callback(lambda done: session.storing.pop(done, None))
