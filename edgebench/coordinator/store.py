"""The coordinator's store: every read and write of the database goes through here.

Writes that must not happen twice (a lease grant, a result) are compare-and-set
updates checked by row count, so they are safe whichever database is underneath.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import hmac
import json
import random
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, insert, update
from sqlmodel import Session, SQLModel, col, select

from edgebench.coordinator import schema
from edgebench.coordinator.database import make_engine, writer_engine
from edgebench.coordinator.jobspec import MAX_RUNS_PER_JOB, PlannedRun
from edgebench.coordinator.selectors import DeviceSelector, matches
from edgebench.coordinator.tables import (
    Agent,
    Artifact,
    Device,
    EnrollmentToken,
    Job,
    Result,
    Run,
    RunState,
    Setting,
    new_id,
    utcnow,
)
from edgebench.errors import EdgebenchError
from edgebench.measure.record import FIELD_NAMES, implausibility

ADMIN_TOKEN_KEY = "admin_token_sha256"
RETRY_CAP_SECONDS = 60.0


def retry_delay(attempts: int, base_seconds: float) -> float:
    """Capped exponential backoff with jitter in [0.5, 1.5) of the step, so runs that
    failed together do not all come back at once."""
    step = min(base_seconds * 2.0 ** max(attempts - 1, 0), RETRY_CAP_SECONDS)
    return step * (0.5 + random.random())


# Result columns beyond the stable fields, taken from the checked wire values.
RESULT_EXTRAS = (
    "engine_version",
    "definitions_version",
    "source_sha256",
    "reps_mode",
    "window_s",
    "windows_json",
    "environment_json",
    "sensors_json",
)
MAX_ATTEMPTS = 3
# Every column of a fresh run that the multi-row insert must spell out.
_NEW_RUN: dict[str, Any] = {"state": RunState.QUEUED, "lease_epoch": 0, "attempts": 0,
                            "phase": "", "rep": 0, "error": ""}  # fmt: skip
CANDIDATE_SCAN = 50  # queued runs looked at per submitter on each claim


class StoreError(EdgebenchError, ValueError):
    """A request the store refuses; the message is meant for the user."""


class NotFound(StoreError):
    pass


class StaleLease(StoreError):
    """A write under a lease that is no longer current (fencing)."""


class Conflict(StoreError):
    """The same result id with other content."""


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Enrollment:
    agent_id: str
    secret: str
    device_id: str
    device_name: str


@dataclass(frozen=True)
class ClaimRequest:
    agent: Agent
    device: Device
    request_id: str | None = None  # the agent's WorkRequest


@dataclass(frozen=True)
class _Queued:
    """A queued run as a claim sees it (columns only: ORM rows cost most of a claim)."""

    priority: int
    run_id: str
    created_at: datetime
    device_name: str | None
    selector_json: str

    def fits(self, device: Device) -> bool:
        if self.device_name is not None and self.device_name != device.name:
            return False
        return self.selector_json == "{}" or matches(_selector(self.selector_json), device)


@functools.lru_cache(maxsize=1024)
def _selector(text: str) -> DeviceSelector:
    return DeviceSelector.model_validate_json(text)


@dataclass(frozen=True)
class Claim:
    run: Run
    job: Job


class Store:
    def __init__(self, url: str, *, retry_base_seconds: float = 1.0) -> None:
        self.url = url
        self.retry_base_seconds = retry_base_seconds
        self.engine = make_engine(url)
        schema.upgrade(self.engine)
        # SQLite has one writer at a time, and a writer that finds the lock taken sleeps
        # and polls (1 to 100 ms steps). Writers of this process queue on a lock of ours
        # instead and start the moment the previous one commits (benchmarks/fleet.py:
        # dispatch latency fell from seconds). Other processes still meet SQLite's lock.
        sqlite = self.engine.dialect.name == "sqlite"
        self._writer: threading.Lock | contextlib.nullcontext[None] = (
            threading.Lock() if sqlite else contextlib.nullcontext()
        )

    @contextmanager
    def session(self, *, immediate: bool = False) -> Iterator[Session]:
        """immediate: on SQLite, the transaction takes the write lock when it begins. Every
        transaction that writes must say so: two deferred ones that both read and then
        write deadlock, and SQLite fails one at once with "database is locked" instead
        of waiting (found by benchmarks/fleet.py enrolling agents concurrently)."""
        if not immediate:
            with Session(self.engine, expire_on_commit=False) as session:
                yield session
            return
        with self._writer, Session(writer_engine(self.engine), expire_on_commit=False) as session:
            yield session

    # ---- admin token -------------------------------------------------------------

    def ensure_admin_token(self, given: str | None) -> str | None:
        """Sets the admin token to `given`, or creates one on first start.
        Returns the token when it was created here (to be shown once), else None."""
        with self.session(immediate=True) as s:
            row = s.get(Setting, ADMIN_TOKEN_KEY)
            created = None
            if given:
                value = sha256_text(given)
            elif row is None:
                created = "eba_" + secrets.token_urlsafe(24)
                value = sha256_text(created)
            else:
                return None
            s.merge(Setting(key=ADMIN_TOKEN_KEY, value=value))
            s.commit()
            return created

    def is_admin(self, token: str) -> bool:
        with self.session() as s:
            row = s.get(Setting, ADMIN_TOKEN_KEY)
        return row is not None and hmac.compare_digest(row.value, sha256_text(token))

    # ---- enrollment --------------------------------------------------------------

    def create_enrollment_token(
        self, *, contributor: bool = False, expires_at: datetime | None = None
    ) -> str:
        token = "ebe_" + secrets.token_urlsafe(24)
        with self.session(immediate=True) as s:
            s.add(
                EnrollmentToken(
                    token_sha256=sha256_text(token), contributor=contributor, expires_at=expires_at
                )
            )
            s.commit()
        return token

    def enroll(
        self, *, token: str, name: str, hardware: dict[str, Any], tags: dict[str, str]
    ) -> Enrollment:
        secret = secrets.token_urlsafe(32)
        with self.session(immediate=True) as s:
            row = s.exec(
                select(EnrollmentToken).where(EnrollmentToken.token_sha256 == sha256_text(token))
            ).first()
            now = utcnow()
            if row is None or row.used_at is not None:
                raise StoreError("enrollment token is unknown or already used")
            if row.expires_at is not None and row.expires_at < now:
                raise StoreError("enrollment token has expired")
            device = s.exec(select(Device).where(Device.name == name)).first()
            if device is None:
                device = Device(name=name)
            _apply_hardware(device, hardware)
            device.tags_json = json.dumps(tags, sort_keys=True)
            device.contributor = device.contributor or row.contributor
            s.add(device)
            s.flush()
            agent = Agent(device_id=device.id, secret_sha256=sha256_text(secret))
            s.add(agent)
            # Marks the token used only if nobody else did in the meantime.
            claimed = s.exec(
                update(EnrollmentToken)
                .where(col(EnrollmentToken.id) == row.id, col(EnrollmentToken.used_at).is_(None))
                .values(used_at=now, used_by_agent_id=agent.id)
            )
            if claimed.rowcount != 1:
                s.rollback()
                raise StoreError("enrollment token is unknown or already used")
            s.commit()
            return Enrollment(agent.id, secret, device.id, device.name)

    def authenticate_agent(self, agent_id: str, secret: str) -> Agent | None:
        with self.session() as s:
            agent = s.get(Agent, agent_id)
        if agent is None or not hmac.compare_digest(agent.secret_sha256, sha256_text(secret)):
            return None
        return agent

    def agent_seen(self, agent: Agent, hardware: dict[str, Any] | None = None) -> Device:
        """A session opened: the device's hardware snapshot is refreshed."""
        with self.session(immediate=True) as s:
            now = utcnow()
            device = s.get(Device, agent.device_id)
            if device is None:
                raise NotFound("the agent's device is gone")
            if hardware:
                _apply_hardware(device, hardware)
            device.last_seen_at = now
            s.add(device)
            s.exec(update(Agent).where(col(Agent.id) == agent.id).values(last_seen_at=now))
            s.commit()
            return device

    def heard_from(self, seen: dict[str, tuple[str, datetime]]) -> None:
        """Heartbeats: {agent id: (device id, when)} seen since the last call, written in
        one transaction (per heartbeat it was most of the fleet's database writes)."""
        if not seen:
            return
        agents = [{"agent": a, "at": at} for a, (_, at) in seen.items()]
        devices = [{"device": d, "at": at} for d, at in seen.values()]
        with self.session(immediate=True) as s:
            connection = s.connection()
            connection.execute(
                update(Agent)
                .where(col(Agent.id) == bindparam("agent"))
                .values(last_seen_at=bindparam("at")),
                agents,
            )
            connection.execute(
                update(Device)
                .where(col(Device.id) == bindparam("device"))
                .values(last_seen_at=bindparam("at")),
                devices,
            )
            s.commit()

    # ---- artifacts ---------------------------------------------------------------

    def get_artifact(self, sha256: str) -> Artifact | None:
        with self.session() as s:
            return s.get(Artifact, sha256)

    def artifacts(self) -> dict[str, Artifact]:
        with self.session() as s:
            return {a.sha256: a for a in s.exec(select(Artifact))}

    def add_artifact(self, *, sha256: str, filename: str, size_bytes: int, fmt: str) -> Artifact:
        with self.session(immediate=True) as s:
            existing = s.get(Artifact, sha256)
            if existing is not None:
                return existing
            artifact = Artifact(sha256=sha256, filename=filename, size_bytes=size_bytes, format=fmt)
            s.add(artifact)
            s.commit()
            return artifact

    # ---- jobs --------------------------------------------------------------------

    def create_job(
        self, job: Job, planned: list[PlannedRun], selector: DeviceSelector | None = None
    ) -> tuple[Job, list[str]]:
        """Stores a job and its runs, all or nothing; returns the job and its run ids. With
        `selector.every`, the matrix is repeated for each enrolled device that matches now,
        each copy pinned to it. Runs go in as one multi-row insert (a 1000-run matrix in
        tens of milliseconds, not seconds of ORM objects)."""
        selector = selector or DeviceSelector()
        with self.session(immediate=True) as s:
            for sha in {p.model_sha256 for p in planned}:
                if s.get(Artifact, sha) is None:
                    raise StoreError(f"model {sha} was never uploaded")
            if not planned:
                raise StoreError("a job needs at least one run")
            if selector.devices:
                named = col(Device.name).in_(selector.devices)
                known = set(s.exec(select(Device.name).where(named)).all())
                for name in selector.devices:
                    if name not in known:
                        raise StoreError(f"no device named {name!r} is enrolled")
            devices = (
                list(s.exec(select(Device).order_by(col(Device.name)))) if selector.every else []
            )
            pins = self._pins(selector, devices)
            if len(planned) * len(pins) > MAX_RUNS_PER_JOB:
                raise StoreError(
                    f"the job expands to {len(planned) * len(pins)} runs on {len(pins)} devices;"
                    f" at most {MAX_RUNS_PER_JOB}"
                )
            job.selector_json = selector.model_dump_json()
            job.device_name = pins[0] if len(pins) == 1 else None
            s.add(job)
            s.flush()
            # "every" copies are pinned to devices that matched; others are checked per claim
            loose = "{}" if selector.is_open() or selector.every else selector.model_dump_json()
            now = utcnow()
            rows = [
                {
                    **_NEW_RUN,
                    "id": new_id(),
                    "job_id": job.id,
                    "device_name": pin,
                    "selector_json": loose,
                    "priority": job.priority,
                    "submitter": job.submitter,
                    "created_at": now,
                    **dataclasses.asdict(p),
                }
                for pin in pins
                for p in planned
            ]
            s.exec(insert(Run), params=rows)
            s.commit()
            return job, [row["id"] for row in rows]

    @staticmethod
    def _pins(selector: DeviceSelector, devices: list[Device]) -> list[str | None]:
        """The device each copy of the matrix is pinned to; [None] = any matching one."""
        if selector.every:
            pinned: list[str | None] = [d.name for d in devices if matches(selector, d)]
            if not pinned:
                raise StoreError(f"no enrolled device matches: {selector.describe()}")
            return pinned
        if len(selector.devices) == 1:
            return [selector.devices[0]]
        return [None]

    def list_jobs(self, limit: int = 100) -> list[Job]:
        with self.session() as s:
            query = select(Job).order_by(col(Job.created_at).desc()).limit(limit)
            return list(s.exec(query))

    def get_job(self, job_id: str) -> Job:
        with self.session() as s:
            job = s.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        return job

    def runs_of(self, job_id: str) -> list[Run]:
        with self.session() as s:
            query = select(Run).where(Run.job_id == job_id).order_by(col(Run.created_at))
            return list(s.exec(query))

    def cancel_job(self, job_id: str) -> list[tuple[str, str]]:
        """Cancels every unfinished run of a job; returns the (run id, agent id) pairs of
        runs that agents were holding, so that they can be told to stop."""
        with self.session(immediate=True) as s:
            job = s.get(Job, job_id)
            if job is None:
                raise NotFound(f"no job {job_id}")
            job.cancelled = True
            s.add(job)
            held = s.exec(
                select(Run.id, Run.agent_id).where(
                    col(Run.job_id) == job_id,
                    col(Run.state).in_([RunState.LEASED, RunState.RUNNING]),
                )
            ).all()
            s.exec(
                update(Run)
                .where(
                    col(Run.job_id) == job_id,
                    col(Run.state).in_([RunState.QUEUED, RunState.LEASED, RunState.RUNNING]),
                )
                .values(state=RunState.CANCELLED, finished_at=utcnow())
            )
            s.commit()
            return [(run_id, agent_id) for run_id, agent_id in held if agent_id]

    # ---- devices and results -----------------------------------------------------

    def list_devices(self) -> list[Device]:
        with self.session() as s:
            return list(s.exec(select(Device).order_by(col(Device.name))))

    def get_device(self, key: str) -> Device:
        """A device by id or by name."""
        with self.session() as s:
            device = s.get(Device, key) or s.exec(select(Device).where(Device.name == key)).first()
        if device is None:
            raise NotFound(f"no device {key!r}")
        return device

    def list_results(
        self, *, job_id: str | None = None, device_id: str | None = None
    ) -> list[Result]:
        with self.session() as s:
            query = select(Result).order_by(col(Result.created_at))
            if job_id:
                query = query.where(Result.job_id == job_id)
            if device_id:
                query = query.where(Result.device_id == device_id)
            return list(s.exec(query))

    def count(self, table: type[SQLModel]) -> int:
        with self.session() as s:
            return len(list(s.exec(select(table))))

    # ---- scheduling --------------------------------------------------------------

    def claim_run(
        self, *, agent: Agent, device: Device, lease_seconds: int, request_id: str | None = None
    ) -> Claim | None:
        """Leases the next queued run this device may take, or returns None."""
        return self.claim_runs([ClaimRequest(agent, device, request_id)], lease_seconds)[0]

    def claim_runs(self, requests: list[ClaimRequest], lease_seconds: int) -> list[Claim | None]:
        """One dispatch round: leases a run to each asking agent that a queued run matches,
        in one transaction (BEGIN IMMEDIATE on SQLite). Returns a claim or None per request.

        Order: highest priority first; within it, the submitter with the fewest runs in
        flight (fair share: one huge matrix cannot starve others, and leases granted in
        this round count); then the oldest run. Each grant is a compare-and-set on the
        run's state, correct on any database; on PostgreSQL the row is also locked with
        FOR UPDATE SKIP LOCKED, so concurrent coordinators pass over each other's picks."""
        granted: list[str | None] = [None] * len(requests)
        with self.session(immediate=True) as s:
            now = utcnow()
            pools = {sub: self._pool(s, sub, now, CANDIDATE_SCAN + len(requests))
                     for sub in self._queued_submitters(s)}  # fmt: skip
            if not pools:
                return [None] * len(requests)
            in_flight = self._in_flight(s)
            for index, request in enumerate(requests):
                for submitter, row in self._ranked(pools, in_flight, request.device):
                    pools[submitter].remove(row)
                    if self._grant(s, row.run_id, request, now, lease_seconds):
                        granted[index] = row.run_id
                        in_flight[submitter] = in_flight.get(submitter, 0) + 1
                        break
            s.commit()
            return [None if run_id is None else self._claim_of(s, run_id) for run_id in granted]

    def _grant(
        self, s: Session, run_id: str, request: ClaimRequest, now: datetime, lease_seconds: int
    ) -> bool:
        if self.engine.dialect.name == "postgresql":
            lock = select(Run.id).where(col(Run.id) == run_id)
            if s.exec(lock.with_for_update(skip_locked=True)).first() is None:
                return False
        result = s.exec(
            update(Run)
            .where(col(Run.id) == run_id, col(Run.state) == RunState.QUEUED)
            .values(
                state=RunState.LEASED,
                lease_epoch=Run.lease_epoch + 1,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                agent_id=request.agent.id,
                device_id=request.device.id,
                attempts=Run.attempts + 1,
                lease_request_id=request.request_id,
                phase="leased",
                rep=0,
            )
        )
        return bool(result.rowcount == 1)

    @staticmethod
    def _ranked(
        pools: dict[str, list[_Queued]], in_flight: dict[str, int], device: Device
    ) -> list[tuple[str, _Queued]]:
        """Per submitter, the first pooled run this device may take; best first."""
        firsts: list[tuple[int, int, datetime, str, _Queued]] = []
        for submitter, pool in pools.items():
            row = next((r for r in pool if r.fits(device)), None)
            if row is not None:
                rank = (-row.priority, in_flight.get(submitter, 0), row.created_at)
                firsts.append((*rank, submitter, row))
        firsts.sort(key=lambda entry: entry[:3])
        return [(entry[3], entry[4]) for entry in firsts]

    @staticmethod
    def _in_flight(s: Session) -> dict[str, int]:
        return dict(
            s.exec(
                select(Run.submitter, func.count())
                .where(col(Run.state).in_([RunState.LEASED, RunState.RUNNING]))
                .group_by(col(Run.submitter))
            ).all()
        )

    @staticmethod
    def _queued_submitters(s: Session) -> list[str]:
        """Walks ix_run_queue: min(submitter) > the last one found, one step each."""
        found: list[str] = []
        queued = col(Run.state) == RunState.QUEUED
        while True:
            query = select(func.min(Run.submitter)).where(queued)
            if found:
                query = query.where(col(Run.submitter) > found[-1])
            following = s.exec(query).first()
            if following is None:
                return found
            found.append(following)

    @staticmethod
    def _pool(s: Session, submitter: str, now: datetime, size: int) -> list[_Queued]:
        """Up to `size` of the submitter's queued runs out of backoff, best first: its
        priority levels from the top, oldest first within each. Each step walks the index
        ix_run_queue (state, submitter, priority, created_at), so the cost does not grow
        with the length of the queue (benchmarks/fleet.py)."""
        mine = (col(Run.state) == RunState.QUEUED) & (col(Run.submitter) == submitter)
        ready = (col(Run.not_before).is_(None)) | (col(Run.not_before) <= now)
        pool: list[_Queued] = []
        level = s.exec(select(func.max(Run.priority)).where(mine)).first()
        while level is not None and len(pool) < size:
            rows = s.exec(
                select(Run.id, Run.created_at, Run.device_name, Run.selector_json)
                .where(mine, col(Run.priority) == level, ready)
                .order_by(col(Run.created_at))
                .limit(size - len(pool))
            ).all()
            pool += [_Queued(level, *row) for row in rows]
            level = s.exec(
                select(func.max(Run.priority)).where(mine, col(Run.priority) < level)
            ).first()
        return pool

    def _claim_of(self, s: Session, run_id: str) -> Claim:
        run = s.get(Run, run_id)  # not loaded before in this session: read fresh
        assert run is not None
        job = s.get(Job, run.job_id)
        assert job is not None
        return Claim(run=run, job=job)

    def answer_work_request(self, agent_id: str, request_id: str) -> tuple[Claim | None, int]:
        """A work request: (the lease this request id already got, or None; how many other
        leases of the agent were released, as it lost them). Read-only in the usual case
        (the agent holds nothing), so the fleet's requests take no write lock."""
        with self.session() as s:
            held = s.exec(
                select(Run.id, Run.lease_request_id).where(
                    col(Run.agent_id) == agent_id,
                    col(Run.state).in_([RunState.LEASED, RunState.RUNNING]),
                )
            ).all()
            same = next((run_id for run_id, asked in held if asked == request_id), None)
            if same is not None:
                return self._claim_of(s, same), 0
        return None, self.release_leases(agent_id) if held else 0

    def release_leases(self, agent_id: str) -> int:
        """The agent asks for new work, so any lease it still holds was lost on its side
        (it restarted): expire those now, and the reaper requeues them as any expiry."""
        with self.session(immediate=True) as s:
            result = s.exec(
                update(Run)
                .where(
                    col(Run.agent_id) == agent_id,
                    col(Run.state).in_([RunState.LEASED, RunState.RUNNING]),
                )
                .values(lease_expires_at=utcnow() - timedelta(seconds=1))
            )
            s.commit()
        released = int(result.rowcount)
        if released:
            self.reap_expired()
        return released

    def _current_lease(self, s: Session, agent_id: str, run_id: str, epoch: int) -> Run | None:
        """The run if (agent, epoch) holds its live lease. The row stays locked until the
        caller's transaction ends (FOR UPDATE on PostgreSQL; SQLite callers use immediate
        sessions), so a reaper cannot requeue it between this check and the write."""
        run = s.get(Run, run_id, with_for_update=True)
        live = (RunState.LEASED, RunState.RUNNING)
        if run is None or run.agent_id != agent_id or run.lease_epoch != epoch:
            return None
        return run if run.state in live else None

    def extend_lease(
        self,
        *,
        agent_id: str,
        run_id: str,
        epoch: int,
        lease_seconds: int,
        phase: str | None = None,
        rep: int | None = None,
    ) -> bool:
        """Heartbeat or progress of a run: extends its lease if the lease is current."""
        with self.session(immediate=True) as s:
            now = utcnow()
            values: dict[str, Any] = {"lease_expires_at": now + timedelta(seconds=lease_seconds)}
            if phase is not None:
                values.update(state=RunState.RUNNING, phase=phase)
                if rep is not None:
                    values["rep"] = rep
            result = s.exec(
                update(Run)
                .where(
                    col(Run.id) == run_id,
                    col(Run.agent_id) == agent_id,
                    col(Run.lease_epoch) == epoch,
                    col(Run.state).in_([RunState.LEASED, RunState.RUNNING]),
                )
                .values(**values)
            )
            if result.rowcount == 1 and phase is not None:
                s.exec(
                    update(Run)
                    .where(col(Run.id) == run_id, col(Run.started_at).is_(None))
                    .values(started_at=now)
                )
            s.commit()
            return bool(result.rowcount == 1)

    def store_result(
        self,
        *,
        agent_id: str,
        result_id: str,
        run_id: str,
        epoch: int,
        values: dict[str, Any],
        timings: bytes,
    ) -> None:
        """Stores a result and marks its run succeeded in one transaction.
        The same result id twice is one result; raises StoreError when refused."""
        payload_sha = hashlib.sha256(
            json.dumps(values, sort_keys=True).encode() + timings
        ).hexdigest()
        with self.session(immediate=True) as s:
            existing = s.get(Result, result_id)
            if existing is not None:
                if existing.payload_sha256 != payload_sha or existing.run_id != run_id:
                    raise Conflict(f"result {result_id} was already stored with other content")
                return
            problem = implausibility(values)
            if problem:
                raise StoreError(f"implausible result: {problem}")
            run = self._current_lease(s, agent_id, run_id, epoch)
            if run is None:
                raise StaleLease(f"the lease on run {run_id} (epoch {epoch}) is no longer current")
            device_id = run.device_id
            assert device_id is not None
            fields = {name: values[name] for name in FIELD_NAMES}
            extras = {name: values[name] for name in RESULT_EXTRAS if name in values}
            s.add(
                Result(
                    id=result_id,
                    run_id=run_id,
                    job_id=run.job_id,
                    device_id=device_id,
                    payload_sha256=payload_sha,
                    timings=timings,
                    **fields,
                    **extras,
                )
            )
            run.state = RunState.SUCCEEDED
            run.phase = "done"
            run.rep = int(values["reps"])
            run.finished_at = utcnow()
            s.add(run)
            s.commit()

    def fail_run(self, *, agent_id: str, run_id: str, epoch: int, error: str) -> bool:
        with self.session(immediate=True) as s:
            run = self._current_lease(s, agent_id, run_id, epoch)
            if run is None:
                return False
            run.state = RunState.FAILED
            run.error = error[:2000]
            run.finished_at = utcnow()
            s.add(run)
            s.commit()
            return True

    def reap_expired(self) -> int:
        """Puts runs whose lease ran out back in the queue after a capped exponential
        backoff with jitter, or marks them dead after the last attempt. Each change is a
        compare-and-set on the lease epoch, so a heartbeat that lands meanwhile wins.
        Returns how many runs it touched."""
        with self.session(immediate=True) as s:
            now = utcnow()
            expired = s.exec(
                select(Run).where(
                    col(Run.state).in_([RunState.LEASED, RunState.RUNNING]),
                    col(Run.lease_expires_at) < now,
                )
            ).all()
            touched = 0
            for run in expired:
                error = f"lease expired on attempt {run.attempts} of {MAX_ATTEMPTS}"
                values: dict[str, Any]
                if run.attempts >= MAX_ATTEMPTS:
                    values = {"state": RunState.DEAD, "error": error, "finished_at": now}
                else:
                    values = {
                        "state": RunState.QUEUED,
                        "agent_id": None,
                        "lease_expires_at": None,
                        "phase": "",
                        "error": error,
                        "not_before": now
                        + timedelta(seconds=retry_delay(run.attempts, self.retry_base_seconds)),
                    }
                result = s.exec(
                    update(Run)
                    .where(
                        col(Run.id) == run.id,
                        col(Run.lease_epoch) == run.lease_epoch,
                        col(Run.state).in_([RunState.LEASED, RunState.RUNNING]),
                    )
                    .values(**values)
                )
                touched += int(result.rowcount)
            s.commit()
            return touched


_HARDWARE_FIELDS = (
    "hostname",
    "cpu_model",
    "cpu_cores_physical",
    "cpu_cores_logical",
    "cpu_max_mhz",
    "ram_bytes",
    "os",
    "os_release",
    "kernel",
    "arch",
    "python_version",
    "accelerator",
    "edgebench_version",
)


def _apply_hardware(device: Device, hardware: dict[str, Any]) -> None:
    for name in _HARDWARE_FIELDS:
        if name in hardware:
            setattr(device, name, hardware[name])
    if "engines" in hardware:
        device.engines_json = json.dumps(dict(hardware["engines"]), sort_keys=True)
