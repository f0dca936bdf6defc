"""The agent's connection loop: one outbound session to the coordinator, kept open,
re-opened with backoff when it breaks. Runs execute one at a time, each in a child
process of its own (agent/isolation.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from edgebench import paths
from edgebench.agent import hardware, status
from edgebench.agent.backends.base import WorkloadError
from edgebench.agent.cache import DEFAULT_MAX_BYTES, DiskFull, ModelCache
from edgebench.agent.conditions import Conditions
from edgebench.agent.credentials import Credential, NotEnrolled
from edgebench.agent.isolation import NO_LIMITS, RunLimits, measure_in_child
from edgebench.agent.notify import notify
from edgebench.agent.outbox import Outbox
from edgebench.agent.transport import metadata, open_session_channel
from edgebench.agent.wire import WireError, metrics_message, spec_from
from edgebench.errors import EdgebenchError
from edgebench.measure.record import BenchResult
from edgebench.proto.convert import to_message
from edgebench.proto.v1 import agent_pb2 as pb
from edgebench.proto.v1 import agent_pb2_grpc as pb_grpc
from edgebench.workload import RunSpec


class AgentTooOld(EdgebenchError):
    """The coordinator speaks a newer protocol than this agent: retrying cannot help."""


DISK_FULL_BACKOFF_SECONDS = 300  # after a full disk the agent asks for no work this long
log = logging.getLogger("edgebench.agent")

DEFAULT_OUTBOX_LIMIT = 1000  # unacknowledged results before the agent stops taking work
MIN_HEARTBEAT_SECONDS, MAX_HEARTBEAT_SECONDS = 1.0, 60.0


class RunCancelled(Exception):
    pass


@dataclass
class ActiveRun:
    assignment: pb.RunAssignment
    cancelled: threading.Event


class Agent:
    def __init__(
        self,
        credential: Credential,
        *,
        heartbeat_seconds: float = 5.0,
        outbox_limit: int = DEFAULT_OUTBOX_LIMIT,
        insecure: bool = False,
        cache_max_bytes: int = DEFAULT_MAX_BYTES,
        run_limits: RunLimits = NO_LIMITS,
        only_when: Conditions | None = None,
    ) -> None:
        self.credential = credential
        self.run_limits = run_limits
        self.only_when = only_when  # the owner's terms for taking work
        self._held_back = ""  # why the last ask was held back ("" = it was not)
        self._disk_full_until = 0.0  # no work asked for before this (monotonic)
        self.insecure = insecure  # plaintext allowed beyond loopback (no saved authority)
        self.heartbeat_seconds = heartbeat_seconds
        self.outbox = Outbox(paths.data_dir() / "outbox.sqlite")
        self.outbox_limit = outbox_limit
        # The open WorkRequest: kept until an assignment answers it, and sent again with the
        # same id after a reconnect, so a lost answer brings back the same lease.
        self._request_id: str | None = None
        self._asked = False  # the open request went out on the current session
        self.cache = ModelCache(paths.cache_dir() / "models", cache_max_bytes)
        self.active: ActiveRun | None = None
        # When the coordinator last acknowledged a heartbeat (or gave this run): a lease
        # lapses a whole lease after that, however the link failed.
        self._heard_at = time.monotonic()
        self._beats = 0
        self._send_queue: asyncio.Queue[pb.AgentMessage] | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._stub: Any = None  # the current session's stub (model downloads use it)

    async def run_forever(self, stop: asyncio.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            try:
                await self._one_session(stop)
                backoff = 0.5
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                    raise NotEnrolled(
                        f"the coordinator at {self.credential.coordinator} refused this "
                        f"agent's credential: {exc.details()}"
                    ) from None
                if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:  # too old for it
                    raise AgentTooOld(exc.details() or "this agent is too old") from None
                status.record(
                    state="reconnecting", last_error=f"{exc.code().name}: {exc.details()}"
                )
                log.warning(
                    "coordinator %s not reachable (%s); retrying in %.1f s",
                    self.credential.coordinator,
                    exc.code().name,
                    backoff,
                )
            except ConnectionError as exc:
                status.record(state="reconnecting", last_error=str(exc))
                log.warning("session with %s ended: %s", self.credential.coordinator, exc)
            self._send_queue = None
            notify("WATCHDOG=1")  # reconnecting is alive too (at most 30 s apart)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, 30.0)
        if self._run_task:
            self._run_task.cancel()
        status.record(state="stopped", run=None)

    async def _one_session(self, stop: asyncio.Event) -> None:
        async with open_session_channel(self.credential, self.insecure) as channel:
            stub = pb_grpc.AgentServiceStub(channel)
            self._stub = stub
            call = stub.Session(metadata=metadata(self.credential))
            pending = self.outbox.pending()
            hello = pb.Hello(
                hardware=to_message(hardware.snapshot(), pb.HardwareInfo()),
                pending_result_ids=[result_id for result_id, _ in pending],
            )
            await call.write(pb.AgentMessage(hello=hello))
            welcome = await call.read()
            if welcome is grpc.aio.EOF or not welcome.HasField("welcome"):
                raise ConnectionError("the coordinator did not welcome this agent")
            told = welcome.welcome.heartbeat_seconds or self.heartbeat_seconds
            # a coordinator's interval is clamped: 0 or less busy-loops, hours lose leases
            self.heartbeat_seconds = min(max(told, MIN_HEARTBEAT_SECONDS), MAX_HEARTBEAT_SECONDS)
            log.info(
                "connected to %s as %s", self.credential.coordinator, welcome.welcome.device_name
            )
            notify(f"READY=1\nSTATUS=connected to {self.credential.coordinator}")
            status.record(state="connected", coordinator=self.credential.coordinator,
                          device=welcome.welcome.device_name)  # fmt: skip
            queue: asyncio.Queue[pb.AgentMessage] = asyncio.Queue()
            # Read again now, not at hello: a run that finished while the session was
            # being set up (a stalled link can hold the welcome for seconds) is in the
            # outbox but was sent nowhere, and a work request must not overtake it (the
            # coordinator would take the run back as one this agent lost).
            for result_id, payload in self.outbox.pending():
                try:
                    kept = pb.RunResult.FromString(payload)
                except DecodeError as exc:
                    self.outbox.set_aside(result_id, f"not a result message ({exc})")
                    continue
                queue.put_nowait(pb.AgentMessage(result=kept))
            self._send_queue = queue
            self._asked = False
            self._ask_for_work()
            tasks = [
                asyncio.create_task(self._writer(call, queue)),
                asyncio.create_task(self._heartbeats(queue)),
                asyncio.create_task(self._reader(call)),
                asyncio.create_task(stop.wait()),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if not task.cancelled() and task.exception():
                        raise task.exception()  # type: ignore[misc]
            finally:
                for task in tasks:
                    task.cancel()
                call.cancel()

    async def _writer(self, call: Any, queue: asyncio.Queue[pb.AgentMessage]) -> None:
        while True:
            await call.write(await queue.get())

    async def _heartbeats(self, queue: asyncio.Queue[pb.AgentMessage]) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            notify("WATCHDOG=1")  # the loop is alive: a hung one stops these
            active = self.active
            self._beats += 1
            beat = pb.Heartbeat(seq=self._beats)
            if active:
                beat.run_id = active.assignment.run_id
                beat.lease_epoch = active.assignment.lease_epoch
            queue.put_nowait(pb.AgentMessage(heartbeat=beat))
            self._ask_for_work()  # the owner's terms may hold again

    async def _reader(self, call: Any) -> None:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                return
            kind = message.WhichOneof("body")
            if kind == "assignment":
                self._on_assignment(message.assignment)
            elif kind == "ack":
                self._on_ack(message.ack)
            elif kind == "heartbeat_ack":
                self._heard_at = time.monotonic()
            elif kind == "cancel":
                self._cancel(message.cancel.run_id, message.cancel.reason)

    def _cancel(self, run_id: str, reason: str) -> None:
        active = self.active
        if active is not None and active.assignment.run_id == run_id:
            log.info("run %s cancelled by the coordinator: %s", run_id, reason or "job cancelled")
            active.cancelled.set()

    def _send(self, message: pb.AgentMessage) -> None:
        if self._send_queue is not None:  # while disconnected, progress is simply dropped
            self._send_queue.put_nowait(message)

    def _on_ack(self, ack: pb.ResultAck) -> None:
        if ack.accepted:
            self.outbox.remove(ack.result_id)
        else:
            # A refusal is final (stale lease, implausible figures): resending would only
            # replay it forever. It is kept aside, with the reason, for a person to read.
            log.error("result %s refused by the coordinator (%s): %s", ack.result_id,
                      ack.code or "refused", ack.error)  # fmt: skip
            self.outbox.set_aside(ack.result_id, f"refused ({ack.code}): {ack.error[:2000]}")
        self._ask_for_work()  # the outbox may have room again

    def _ask_for_work(self) -> None:
        """Sends a WorkRequest when idle and the outbox has room (back-pressure: with a
        full outbox the agent takes no work until the coordinator acknowledges results)."""
        if self.active is not None or self._asked or self._send_queue is None:
            return
        waiting = len(self.outbox)
        if waiting >= self.outbox_limit:
            log.warning("outbox full (%d results unacknowledged): taking no work until the "
                        "coordinator acknowledges them", waiting)  # fmt: skip
            return
        if self._holds_back():
            return
        self._request_id = self._request_id or str(uuid.uuid4())
        self._asked = True
        self._send(pb.AgentMessage(work_request=pb.WorkRequest(request_id=self._request_id)))

    def _holds_back(self) -> bool:
        """Whether the owner's terms (`--only-when`) keep the agent from asking now; each
        change is logged once."""
        why = (self.only_when.why_not() or "") if self.only_when else ""
        if time.monotonic() < self._disk_full_until:
            why = f"the disk is full (asking again within {DISK_FULL_BACKOFF_SECONDS // 60} min)"
        if why != self._held_back:
            if why:
                log.info("taking no work: %s", why)
            else:
                log.info("the owner's terms hold again: asking for work")
            self._held_back = why
        return bool(why)

    def _on_assignment(self, assignment: pb.RunAssignment) -> None:
        active = self.active
        if active is not None:
            if active.assignment.run_id != assignment.run_id:  # a resend of ours is no news
                log.warning("ignoring run %s: already running one", assignment.run_id)
            return
        self._request_id, self._asked = None, False
        self._heard_at = time.monotonic()  # the grant is as good as an acknowledged heartbeat
        self.active = ActiveRun(assignment=assignment, cancelled=threading.Event())
        status.record(run=assignment.run_id)
        self._run_task = asyncio.create_task(self._execute(self.active))

    async def _execute(self, active: ActiveRun) -> None:
        assignment = active.assignment
        run_id, epoch = assignment.run_id, assignment.lease_epoch
        loop = asyncio.get_running_loop()

        def check() -> None:
            if active.cancelled.is_set():
                raise RunCancelled()
            if time.monotonic() - self._heard_at > assignment.lease_seconds:
                # No heartbeat acknowledged for a whole lease (link down or stalled): the
                # lease has lapsed and the run is someone else's now.
                log.warning("run %s abandoned: no heartbeat acknowledged for a whole lease", run_id)
                raise RunCancelled()

        def progress(phase: str, done: int, total: int) -> None:
            check()
            message = pb.RunProgress(
                run_id=run_id, lease_epoch=epoch, phase=phase, rep=done, reps=total
            )
            loop.call_soon_threadsafe(self._send, pb.AgentMessage(progress=message))

        try:
            spec = spec_from(assignment)  # a bad spec fails the run before any download
            progress("fetching", 0, spec.workload.repetitions.reps)
            model = assignment.model
            model_path = await self.cache.ensure_model(
                model.sha256,
                model.format or "gguf",
                self._fetcher(assignment),
                size_bytes=model.size_bytes or None,
            )
            result = await asyncio.to_thread(
                self._measure, model_path, assignment, spec, progress, check
            )
            message = pb.RunResult(
                result_id=str(uuid.uuid4()),
                run_id=run_id,
                lease_epoch=epoch,
                metrics=metrics_message(result),
            )
            self.outbox.add(message.result_id, run_id, message.SerializeToString())
            self._send(pb.AgentMessage(result=message))
            log.info("run %s done: decode %.1f tok/s", run_id, result.decode_tps)
        except RunCancelled:
            log.info("run %s stopped", run_id)
        except grpc.aio.AioRpcError as exc:
            self._fail(run_id, epoch, f"{exc.code().name}: {exc.details()}")
        except (WorkloadError, WireError) as exc:  # no device could do it as asked
            self._fail(run_id, epoch, str(exc), kind="workload")
        except DiskFull as exc:  # this device cannot take work until someone makes room
            self._disk_full_until = time.monotonic() + DISK_FULL_BACKOFF_SECONDS
            self._fail(run_id, epoch, str(exc), kind="unhealthy")
        except Exception as exc:
            self._fail(run_id, epoch, str(exc))
        finally:
            self.active = None
            status.record(run=None)
            self._ask_for_work()

    def _fail(self, run_id: str, epoch: int, error: str, kind: str = "device") -> None:
        log.error("run %s failed (%s): %s", run_id, kind, error)
        status.record(last_error=f"run {run_id[:8]} failed: {error[:300]}")
        failure = pb.RunFailure(run_id=run_id, lease_epoch=epoch, error=error, kind=kind)
        self._send(pb.AgentMessage(failure=failure))

    def _measure(
        self,
        model_path: Path,
        assignment: pb.RunAssignment,
        spec: RunSpec,
        progress: Any,
        check: Any,
    ) -> BenchResult:
        results = measure_in_child(
            model_path,
            spec,
            cache_dir=self.cache.root.parent / "variants",
            source_sha256=assignment.model.sha256,
            progress=progress,
            check=check,
            limits=self.run_limits,
        )
        return results[0]  # a run is one test of the job's matrix

    def _fetcher(self, assignment: pb.RunAssignment) -> Any:
        stub, md = self._stub, metadata(self.credential)

        async def fetch(offset: int) -> AsyncIterator[tuple[int, bytes]]:
            request = pb.FetchArtifactRequest(sha256=assignment.model.sha256, offset=offset)
            async for chunk in stub.FetchArtifact(request, metadata=md):
                yield chunk.offset, chunk.data

        return fetch
