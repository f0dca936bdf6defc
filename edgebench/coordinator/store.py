"""The coordinator's store: the database, its schema, and the reads and writes of
everything but the run lifecycle (tokens, enrollment, artifacts, jobs, cancels, reads for
the API).

The run lifecycle's writes (claims, lease touches, results, failures, expiry) are the
functions of coordinator/lifecycle.py, each working inside a write transaction its caller
opens: in production the writer threads (coordinator/writer.py) commit many at once; a
script or a test opens one with `Store.writing()`. Every such write that must not happen
twice (a grant, a result) is a compare-and-set checked by row count.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar, cast

from sqlalchemy import bindparam, case, delete, func, insert, or_, update
from sqlmodel import Session, col, select

from edgebench.coordinator import leaderboard, lifecycle, schema
from edgebench.coordinator.database import make_engine, writer_engine
from edgebench.coordinator.errors import Ambiguous, Conflict, NotFound, StaleLease, StoreError
from edgebench.coordinator.jobspec import MAX_RUNS_PER_JOB, PlannedRun
from edgebench.coordinator.lifecycle import (
    MAX_ATTEMPTS,
    Claim,
    ClaimRequest,
    retry_delay,
)
from edgebench.coordinator.selectors import (
    can_run,
    fit_warnings,
    matches,
    why_waiting,
)
from edgebench.coordinator.tables import (
    DEVICE_STATES,
    LEADERBOARD,
    Agent,
    Artifact,
    AuditEntry,
    Device,
    EnrollmentToken,
    Job,
    Result,
    ResultPayload,
    Run,
    RunState,
    Setting,
    admission_of,
    identity_of,
    is_online,
    new_id,
    utcnow,
)
from edgebench.dashboard.models import DeviceSelector
from edgebench.device import HardwareInfo, hardware_class, hardware_signature

log = logging.getLogger("edgebench.coordinator")
ADMIN_TOKEN_KEY = "admin_token_sha256"
REVOKED_SECRET = "revoked"  # an agent's secret hash after `devices revoke`: matches none
# Every column of a fresh run that the multi-row insert must spell out.
_NEW_RUN: dict[str, Any] = {"state": RunState.QUEUED, "lease_epoch": 0, "attempts": 0,
                            "phase": "", "rep": 0, "error": ""}  # fmt: skip
# PlannedRun's fields, read one by one: dataclasses.asdict deep-copies, and cost half of
# storing a 1000-run job.
_PLANNED_FIELDS = tuple(field.name for field in dataclasses.fields(PlannedRun))
_AGENT_BY_ID = select(Agent).where(col(Agent.id) == bindparam("agent"))

__all__ = [
    "MAX_ATTEMPTS",
    "Ambiguous",
    "Claim",
    "ClaimRequest",
    "Conflict",
    "NotFound",
    "StaleLease",
    "Store",
    "StoreError",
    "retry_delay",
]


# What a person may type for an id: a unique prefix of at least 4 characters, as the CLI
# and the pages print 8 (ids are UUIDs: hex digits and hyphens).
ID_PREFIX = re.compile(r"^[0-9a-f][0-9a-f-]{3,35}$")
SHOWN_MATCHES = 5


SPENT_TOKEN = "enrollment token is unknown, used up or revoked"


def resolve_id(
    s: Session,
    table: type[Job] | type[Device] | type[Result] | type[EnrollmentToken] | type[Run],
    key: str,
    what: str,
) -> str:
    """The one id `key` names: the whole id, or a unique prefix of it."""
    if s.get(table, key) is not None:
        return key
    if ID_PREFIX.match(key):
        ids = list(
            s.exec(select(table.id).where(col(table.id).startswith(key)).limit(SHOWN_MATCHES + 1))
        )
        if len(ids) == 1:
            return str(ids[0])
        if ids:
            shown = ", ".join(i[:8] for i in ids[:SHOWN_MATCHES])
            more = " and more" if len(ids) > SHOWN_MATCHES else ""
            raise Ambiguous(f"{what} id {key!r} is ambiguous: it starts {shown}{more}")
    raise NotFound(f"no {what} {key!r}")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _device(s: Session, key: str) -> Device:
    named = s.exec(select(Device).where(Device.name == key)).first()
    device: Device | None = named or s.get(Device, resolve_id(s, Device, key, "device"))
    assert device is not None
    return device


@dataclass(frozen=True)
class Cancelled:
    job_id: str
    runs: int  # runs this cancel stopped; finished runs are left alone
    held: list[tuple[str, str]]  # (run id, agent id) of runs agents were holding


@dataclass(frozen=True)
class Counts:
    runs: dict[str, int]  # by state
    queued: dict[str, int]  # queued runs by priority band: high (>0), normal, low (<0)
    results: dict[str, int]  # by verification


@dataclass(frozen=True)
class Removed:
    name: str
    results: int  # results deleted with it
    cancelled: int  # queued runs pinned to it, cancelled


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Enrollment:
    agent_id: str
    secret: str
    device_id: str
    device_name: str


T = TypeVar("T")


class Store:
    def __init__(
        self, url: str, *, retry_base_seconds: float = 1.0, fleet_read_seconds: float = 2.0
    ) -> None:
        self.url = url
        self.retry_base_seconds = retry_base_seconds
        self.engine = make_engine(url)
        schema.upgrade(self.engine)
        # SQLite has one writer at a time, and a writer that finds the lock taken sleeps
        # and polls (1 to 100 ms steps). Writers of this process queue on a lock of ours
        # instead and start the moment the previous one commits (benchmarks/fleet.py:
        # dispatch latency fell from seconds). Other processes still meet SQLite's lock.
        self.fleet_read_seconds = fleet_read_seconds
        # a revoked device's sessions end within a heartbeat (at most 5 s): removal waits
        self.remove_settle_seconds = 15.0
        self._fleet_cache: list[Device] = []
        self._read_cache: dict[str, tuple[float, Any]] = {}
        self._fleet_read_at = -math.inf
        sqlite = self.engine.dialect.name == "sqlite"
        self._writer: threading.Lock | contextlib.nullcontext[None] = (
            threading.Lock() if sqlite else contextlib.nullcontext()
        )
        self._fill_leaderboard()

    def _fill_leaderboard(self) -> None:
        """A store from before the leaderboard table: its groups, from its results, and
        its devices' hardware classes."""
        with self.session(immediate=True) as s:
            connection = s.connection()
            if leaderboard.needs_rebuild(connection):
                leaderboard.rebuild(connection)
            unclassed = s.exec(select(Device).where(col(Device.hardware_class) == "")).all()
            for device in unclassed:
                device.hardware_class = hardware_class(identity_of(device))
                s.add(device)
            s.commit()

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

    # ---- audit log ---------------------------------------------------------------

    def record_audit(self, *, actor: str, action: str, status: int, address: str) -> None:
        with self.session(immediate=True) as s:
            s.add(AuditEntry(actor=actor, action=action[:500], status=status, address=address))
            s.commit()

    def audit_entries(self, offset: int, limit: int) -> tuple[list[AuditEntry], int]:
        """A page of the audit log, newest first, and how many entries it has."""
        with self.session() as s:
            newest = col(AuditEntry.at).desc()
            rows = list(s.exec(select(AuditEntry).order_by(newest).offset(offset).limit(limit)))
            total = s.exec(select(func.count()).select_from(AuditEntry)).one()
        return rows, int(total)

    def may_read(self, token: str) -> bool:
        """The admin token, or a viewer token that is neither expired nor revoked."""
        return self.is_admin(token) or self.viewer_expiry(token) is not None

    def viewer_expiry(self, token: str) -> datetime | None:
        """When a live viewer token expires (the far future when never); None when the
        token is no live viewer token."""
        with self.session() as s:
            row = s.exec(
                select(EnrollmentToken).where(EnrollmentToken.token_sha256 == sha256_text(token))
            ).first()
        if row is None or not row.viewer or row.revoked_at is not None:
            return None
        if row.expires_at is not None and row.expires_at <= utcnow():
            return None
        return row.expires_at or datetime.max.replace(tzinfo=timezone.utc)

    # ---- enrollment --------------------------------------------------------------

    def create_enrollment_token(
        self,
        *,
        contributor: bool = False,
        expires_at: datetime | None = None,
        device_name: str | None = None,
        uses: int = 1,
        viewer: bool = False,
        owner: str = "",
    ) -> str:
        """A token for `uses` enrollments; with `device_name`, one that re-enrolls that
        enrolled device (a reinstalled agent) and can enroll nothing else; `viewer`: one
        that only reads the dashboard and API (until it expires or is revoked)."""
        if viewer and (contributor or device_name is not None):
            raise StoreError("a viewer token enrolls nothing: no --contributor or --device")
        token = ("ebv_" if viewer else "ebe_") + secrets.token_urlsafe(24)
        with self.session(immediate=True) as s:
            if device_name is not None:
                device = s.exec(select(Device).where(Device.name == device_name)).first()
                if device is None:
                    raise StoreError(f"no device named {device_name!r} is enrolled")
                if contributor and not device.contributor:
                    raise StoreError(
                        f"{device_name} is an operator device: a contributor token cannot "
                        "re-enroll it"
                    )
            s.add(
                EnrollmentToken(
                    token_sha256=sha256_text(token),
                    contributor=contributor,
                    expires_at=expires_at,
                    device_name=device_name,
                    uses_left=uses,
                    viewer=viewer,
                    owner=owner,
                )
            )
            s.commit()
        return token

    def enroll(
        self,
        *,
        token: str,
        name: str,
        hardware: HardwareInfo,
        tags: dict[str, str],
        require_approval: bool = False,
    ) -> Enrollment:
        secret = secrets.token_urlsafe(32)
        with self.session(immediate=True) as s:
            row = s.exec(
                select(EnrollmentToken).where(EnrollmentToken.token_sha256 == sha256_text(token))
            ).first()
            now = utcnow()
            if row is None or row.viewer or row.uses_left < 1 or row.revoked_at is not None:
                raise StoreError(SPENT_TOKEN)
            if row.expires_at is not None and row.expires_at < now:
                raise StoreError("enrollment token has expired")
            device = s.exec(select(Device).where(Device.name == name)).first()
            _check_may_enroll(row, name, device)
            if device is None:  # a new device waits for an admin where approval is required
                device = Device(name=name, admission="pending" if require_approval else "approved")
            _apply_hardware(device, hardware)
            device.tags_json = json.dumps(tags, sort_keys=True)
            device.contributor = device.contributor or row.contributor
            device.owner = row.owner or device.owner
            device.revoked_at = None  # enrolled again, with a token made for it
            if device.admission == "rejected":  # the admin made a token for it: let it in
                device.admission = "approved"
            device.accepted_hardware = hardware_signature(hardware.identity)
            device.review = ""  # the admin made a token for this device: its hardware now
            s.add(device)
            s.flush()
            agent = Agent(device_id=device.id, secret_sha256=sha256_text(secret))
            s.add(agent)
            # Takes a use only if one is left now (another enrollment may have taken it).
            claimed = s.exec(
                update(EnrollmentToken)
                .where(
                    col(EnrollmentToken.id) == row.id,
                    col(EnrollmentToken.uses_left) > 0,
                    col(EnrollmentToken.revoked_at).is_(None),
                )
                .values(
                    uses_left=EnrollmentToken.uses_left - 1,
                    used_at=now,
                    used_by_agent_id=agent.id,
                )
            )
            if claimed.rowcount != 1:
                s.rollback()
                raise StoreError(SPENT_TOKEN)
            s.commit()
        self._fleet_read_at = -math.inf  # a new device: the next check reads the fleet
        return Enrollment(agent.id, secret, device.id, device.name)

    def enrollment_tokens(self) -> list[EnrollmentToken]:
        """Every enrollment token, newest first (their secrets are not kept)."""
        with self.session() as s:
            newest = col(EnrollmentToken.created_at).desc()
            return list(s.exec(select(EnrollmentToken).order_by(newest)))

    def revoke_enrollment_token(self, key: str) -> EnrollmentToken:
        """Revokes a token by id or unique id prefix: it enrolls nothing more."""
        with self.session(immediate=True) as s:
            token = s.get(EnrollmentToken, resolve_id(s, EnrollmentToken, key, "token"))
            assert token is not None
            if token.revoked_at is None:
                token.revoked_at = utcnow()
                s.add(token)
            s.commit()
            s.refresh(token)
            return token

    def rotate_secret(self, agent_id: str) -> str:
        """A new secret for an authenticated agent; its old one stops working now."""
        secret = secrets.token_urlsafe(32)
        with self.session(immediate=True) as s:
            s.exec(
                update(Agent)
                .where(col(Agent.id) == agent_id, col(Agent.secret_sha256) != REVOKED_SECRET)
                .values(secret_sha256=sha256_text(secret))
            )
            s.commit()
        return secret

    def authenticate_agent(self, agent_id: str, secret: str) -> Agent | None:
        with self.session() as s:
            agent: Agent | None = s.exec(_AGENT_BY_ID, params={"agent": agent_id}).first()
            if agent is None or not hmac.compare_digest(agent.secret_sha256, sha256_text(secret)):
                return None
            device = s.get(Device, agent.device_id)
        if device is None or device.revoked_at is not None or device.admission == "rejected":
            return None
        return agent

    # ---- artifacts ---------------------------------------------------------------

    def get_artifact(self, sha256: str) -> Artifact | None:
        with self.session() as s:
            return s.get(Artifact, sha256)

    def artifacts(self) -> dict[str, Artifact]:
        with self.session() as s:
            return {a.sha256: a for a in s.exec(select(Artifact))}

    def add_artifact(
        self,
        *,
        sha256: str,
        filename: str,
        size_bytes: int,
        fmt: str,
        parameters: int | None = None,
    ) -> Artifact:
        with self.session(immediate=True) as s:
            existing = s.get(Artifact, sha256)
            if existing is not None:
                return existing
            artifact = Artifact(
                sha256=sha256,
                filename=filename,
                size_bytes=size_bytes,
                format=fmt,
                parameters=parameters,
            )
            s.add(artifact)
            s.commit()
            return artifact

    # ---- jobs --------------------------------------------------------------------

    def create_job(
        self, job: Job, planned: list[PlannedRun], selector: DeviceSelector | None = None
    ) -> tuple[Job, list[str], list[str]]:
        """Stores a job and its runs, all or nothing; returns the job, its run ids and
        warnings for the submitter. With `selector.every`, the matrix is repeated for each
        enrolled device that matches now, each copy pinned to it (with the runs that
        device can run). Everything is checked and the rows are built before the write
        transaction, which then holds the database only for one multi-row insert
        (dispatch rounds wait while it does)."""
        selector = selector or DeviceSelector()
        pins, warnings = self._check_job(planned, selector)
        job.selector_json = selector.model_dump_json()
        job.device_name = pins[0][0] if len(pins) == 1 else None
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
                **{name: getattr(p, name) for name in _PLANNED_FIELDS},
            }
            for pin, backends in pins
            for p in planned
            if backends is None or p.backend in backends
        ]
        with self.writing() as s:
            s.add(job)
            s.flush()
            s.connection().execute(insert(Run), rows)
        return job, [row["id"] for row in rows], warnings

    def _check_job(
        self, planned: list[PlannedRun], selector: DeviceSelector
    ) -> tuple[list[tuple[str | None, set[str] | None]], list[str]]:
        """Refuses a job that cannot run; returns the devices its copies are pinned to
        (with the engines each can run; None: any device, checked per claim) and
        warnings. (Artifacts and devices are never deleted, so what is read here stays
        true.)"""
        if not planned:
            raise StoreError("a job needs at least one run")
        with self.session() as s:
            for sha in {p.model_sha256 for p in planned}:
                if s.get(Artifact, sha) is None:
                    raise StoreError(f"model {sha} was never uploaded")
        devices = self.fleet(fresh=selector.every)
        known = {d.name for d in devices}
        if not set(selector.devices) <= known:  # enrolled since the last read?
            devices = self.fleet(fresh=True)
            known = {d.name for d in devices}
        for name in selector.devices:
            if name not in known:
                raise StoreError(f"no device named {name!r} is enrolled")
        backends = {p.backend for p in planned}
        try:
            warnings = fit_warnings(selector, backends, devices)
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        pins = self._pins(selector, devices, backends)
        count = sum(
            sum(1 for p in planned if able is None or p.backend in able) for _, able in pins
        )
        if count > MAX_RUNS_PER_JOB:
            raise StoreError(
                f"the job expands to {count} runs on {len(pins)} devices; "
                f"at most {MAX_RUNS_PER_JOB}"
            )
        return pins, warnings

    @staticmethod
    def _pins(
        selector: DeviceSelector, devices: list[Device], backends: set[str]
    ) -> list[tuple[str | None, set[str] | None]]:
        """The device each copy of the matrix is pinned to, with the engines it can run;
        [(None, None)] = any matching device."""
        if selector.every:
            matched = [d for d in devices if matches(selector, d)]
            if not matched:
                raise StoreError(f"no enrolled device matches: {selector.describe()}")
            able = [(d.name, {b for b in backends if can_run(d, b)}) for d in matched]
            pins: list[tuple[str | None, set[str] | None]] = [(n, r) for n, r in able if r]
            if not pins:
                engines = ", ".join(sorted(backends))
                raise StoreError(f"no device that matches {selector.describe()} can run {engines}")
            return pins
        if len(selector.devices) == 1:
            return [(selector.devices[0], None)]
        return [(None, None)]

    def fleet(self, *, fresh: bool = False) -> list[Device]:
        """The enrolled devices, read at most every `fleet_read_seconds`: job checks and
        "why runs wait" look at the whole fleet, and 1,000 rows read on every job held the
        event loop's GIL long enough to double dispatch latency (benchmarks/fleet.py)."""
        now = time.monotonic()
        if fresh or now - self._fleet_read_at > self.fleet_read_seconds:
            with self.session() as s:
                self._fleet_cache = list(s.exec(select(Device).order_by(col(Device.name))))
            self._fleet_read_at = now
        return self._fleet_cache

    def waiting(self, job_id: str) -> str | None:
        """Why the job's queued runs have not gone out, or None when none waits."""
        with self.session() as s:
            queued = s.exec(
                select(Run.selector_json, Run.device_name, Run.backend)
                .where(col(Run.job_id) == job_id, col(Run.state) == RunState.QUEUED)
                .distinct()
            ).all()
            if not queued:
                return None
            job = s.get(Job, job_id)
        devices = self.fleet()
        online = {d.id for d in devices if is_online(d)}
        selector = DeviceSelector.model_validate_json(job.selector_json if job else "{}")
        reasons = {
            why_waiting(selector, pinned, backend, devices, online) for _, pinned, backend in queued
        }
        return "; ".join(sorted(reasons))

    def jobs_with_runs(
        self, offset: int = 0, limit: int = 100
    ) -> tuple[list[Job], dict[str, list[Run]], int]:
        """A page of jobs, newest first, their runs by job id, and how many jobs there are
        (three queries, whatever the page size)."""
        with self.session() as s:
            total = s.exec(select(func.count()).select_from(Job)).one()
            query = select(Job).order_by(col(Job.created_at).desc(), col(Job.id))
            jobs = list(s.exec(query.offset(offset).limit(limit)))
            runs: dict[str, list[Run]] = {job.id: [] for job in jobs}
            if jobs:
                in_page = select(Run).where(col(Run.job_id).in_(list(runs)))
                for run in s.exec(in_page.order_by(col(Run.created_at))):
                    runs[run.job_id].append(run)
        return jobs, runs, int(total)

    def queue_depth(self) -> int:
        """Runs waiting for a device."""
        with self.session() as s:
            queued = select(func.count()).where(col(Run.state) == RunState.QUEUED)
            return int(s.exec(queued).one())

    def counts(self) -> Counts:
        """What a metrics scrape reports of the store: runs by state, queued runs by
        priority band, results by verification (three grouped counts)."""
        band = case((col(Run.priority) > 0, "high"), (col(Run.priority) < 0, "low"),
                    else_="normal")  # fmt: skip
        with self.session() as s:
            runs = s.exec(select(Run.state, func.count()).group_by(col(Run.state))).all()
            queued = s.exec(
                select(band, func.count()).where(col(Run.state) == RunState.QUEUED).group_by(band)
            ).all()
            results = s.exec(
                select(Result.verification, func.count()).group_by(col(Result.verification))
            ).all()
        return Counts(
            runs={RunState(state).value: int(n) for state, n in runs},
            queued={str(name): int(n) for name, n in queued},
            results={str(state): int(n) for state, n in results},
        )

    def read_cached(self, key: str, compute: Callable[[], T]) -> T:
        """`compute()`, remembered for `fleet_read_seconds` (0: never): what dashboards
        show beside every view (filter choices, the tests there are) changes rarely and
        costs a scan of the leaderboard's groups."""
        now = time.monotonic()
        held = self._read_cache.get(key)
        if held is not None and now - held[0] <= self.fleet_read_seconds:
            return cast(T, held[1])
        value = compute()
        self._read_cache[key] = (now, value)
        return value

    def result_values(self, *names: str) -> dict[str, list[str]]:
        """The distinct values of result columns among the leaderboard's groups (their
        newest results: one row per group, not a scan of every result)."""
        return self.read_cached(f"values:{names}", lambda: self._result_values(names))

    def _result_values(self, names: tuple[str, ...]) -> dict[str, list[str]]:
        out = {}
        shown = LEADERBOARD.c
        with self.engine.connect() as connection:
            for name in names:
                query = select(shown[name]).where(shown.view == "newest").distinct()
                out[name] = sorted(str(v) for v in connection.execute(query).scalars())
        return out

    def holds_model(self, agent_id: str, sha256: str) -> bool:
        """Whether the agent holds a live lease on a run of this model."""
        live = col(Run.state).in_([RunState.LEASED, RunState.RUNNING])
        with self.session() as s:
            held = s.exec(
                select(Run.id)
                .where(Run.agent_id == agent_id, Run.model_sha256 == sha256, live)
                .limit(1)
            ).first()
        return held is not None

    def live_runs(self) -> list[Run]:
        """Runs an agent holds now (leased or running)."""
        with self.session() as s:
            live = col(Run.state).in_([RunState.LEASED, RunState.RUNNING])
            return list(s.exec(select(Run).where(live)))

    def get_result(self, key: str) -> tuple[Result, ResultPayload]:
        """A result by id or by a unique id prefix, with its payload."""
        with self.session() as s:
            result_id = resolve_id(s, Result, key, "result")
            result, payload = s.get(Result, result_id), s.get(ResultPayload, result_id)
        if result is None or payload is None:  # deleted meanwhile (`results delete`)
            raise NotFound(f"no result {key!r}")
        return result, payload

    def delete_result(self, key: str) -> Result:
        """Deletes a result (by id or unique prefix) and its payload; its leaderboard
        group is counted again from the results it still has."""
        with self.session(immediate=True) as s:
            result_id = resolve_id(s, Result, key, "result")
            result, payload = s.get(Result, result_id), s.get(ResultPayload, result_id)
            if result is None or payload is None:
                raise NotFound(f"no result {key!r}")
            deleted = {**result.model_dump(), "environment_json": payload.environment_json}
            s.delete(payload)
            s.flush()  # first: the payload names the result
            s.delete(result)
            s.flush()
            leaderboard.forget(s.connection(), deleted)
            s.commit()
        self._read_cache.clear()  # the tests and values lists may have lost an entry
        return result

    def get_job(self, key: str) -> Job:
        """A job by id or by a unique id prefix."""
        with self.session() as s:
            job = s.get(Job, resolve_id(s, Job, key, "job"))
        assert job is not None  # jobs are never deleted
        return job

    def runs_of(self, job_id: str) -> list[Run]:
        with self.session() as s:
            query = select(Run).where(Run.job_id == job_id).order_by(col(Run.created_at))
            return list(s.exec(query))

    def cancel_job(self, key: str) -> Cancelled:
        """Cancels the runs of a job that have not finished; finished runs and their
        results stay as they are. Says which runs agents were holding, so that they can
        be told to stop."""
        with self.session(immediate=True) as s:
            job = s.get(Job, resolve_id(s, Job, key, "job"))
            assert job is not None
            job_id = job.id
            held = s.exec(
                select(Run.id, Run.agent_id).where(
                    col(Run.job_id) == job_id,
                    col(Run.state).in_([RunState.LEASED, RunState.RUNNING]),
                )
            ).all()
            changed = s.exec(
                update(Run)
                .where(
                    col(Run.job_id) == job_id,
                    col(Run.state).in_([RunState.QUEUED, RunState.LEASED, RunState.RUNNING]),
                )
                .values(state=RunState.CANCELLED, finished_at=utcnow())
            ).rowcount
            if changed:
                job.cancelled = True
                s.add(job)
            s.commit()
            return Cancelled(
                job_id=job_id,
                runs=changed,
                held=[(run_id, agent_id) for run_id, agent_id in held if agent_id],
            )

    def retry_job(self, key: str, run_key: str | None = None) -> tuple[str, int]:
        """Queues the job's failed and dead runs again (or the one named), with a fresh
        attempt count and no device excluded. Returns the job id and how many runs."""
        with self.session(immediate=True) as s:
            job_id = resolve_id(s, Job, key, "job")
            where = [col(Run.job_id) == job_id,
                     col(Run.state).in_([RunState.FAILED, RunState.DEAD])]  # fmt: skip
            if run_key is not None:
                run_id = resolve_id(s, Run, run_key, "run")
                where.append(col(Run.id) == run_id)
            changed = s.exec(
                update(Run)
                .where(*where)
                .values(state=RunState.QUEUED, attempts=0, error="", phase="", rep=0,
                        not_before=None, failed_on_device_id=None, finished_at=None,
                        agent_id=None, lease_expires_at=None)
            ).rowcount  # fmt: skip
            s.commit()
        return job_id, changed

    # ---- devices and results -----------------------------------------------------

    def list_devices(self) -> list[Device]:
        with self.session() as s:
            return list(s.exec(select(Device).order_by(col(Device.name))))

    def device_names(self) -> dict[str, str]:
        """{device id: name}, columns only (job views need no more of a device)."""
        with self.session() as s:
            return dict(s.exec(select(Device.id, Device.name)).all())

    def get_device(self, key: str) -> Device:
        """A device by id, by name or by a unique id prefix."""
        with self.session() as s:
            return _device(s, key)

    def revoke_device(self, key: str, retry_base_seconds: float = 1.0) -> Device:
        """Its agents' credentials are refused from now on; the runs they hold go back to
        the queue (their leases expire now). Coordinators end its live sessions within a
        heartbeat (revoked_since)."""
        with self.session(immediate=True) as s:
            device = _device(s, key)
            if device.revoked_at is None:
                device.revoked_at = utcnow()
                s.add(device)
                agents = s.exec(select(Agent.id).where(Agent.device_id == device.id)).all()
                lifecycle.release_leases(s, list(agents), retry_base_seconds)
                # no secret hashes to this: these agents stay refused even after the
                # device is enrolled again (with a token made for it)
                s.exec(
                    update(Agent)
                    .where(col(Agent.device_id) == device.id)
                    .values(secret_sha256=REVOKED_SECRET)
                )
            s.commit()
            s.refresh(device)
        self._fleet_read_at = -math.inf
        return device

    def remove_device(self, key: str) -> Removed:
        """Deletes a revoked device for good: its agents, its results (with their payloads
        and leaderboard rows) and its queued runs pinned to it (cancelled); finished runs
        keep their history without it. Only once its sessions have surely ended
        (`remove_settle_seconds` after the revocation): a live session could still claim
        a run for it."""
        with self.session(immediate=True) as s:
            device = _device(s, key)
            if device.revoked_at is None:
                raise StoreError(f"revoke {device.name} first (`devices revoke {device.name}`)")
            waited = (utcnow() - _aware(device.revoked_at)).total_seconds()
            if waited < self.remove_settle_seconds:
                raise StoreError(
                    f"{device.name} was revoked {waited:.0f} s ago: its sessions may still be "
                    f"ending; remove it {self.remove_settle_seconds - waited:.0f} s from now"
                )
            connection = s.connection()
            # its pinned runs, and replications of its results, that have not gone out
            pinned_or_checking = or_(
                col(Run.device_name) == device.name,
                col(Run.checks_result_id).in_(select(Result.id).where(
                    col(Result.device_id) == device.id)),
            )  # fmt: skip
            cancelled = connection.execute(
                update(Run)
                .where(pinned_or_checking, col(Run.state) == RunState.QUEUED)
                .values(state=RunState.CANCELLED, error=f"device {device.name} was removed",
                        finished_at=utcnow())
            ).rowcount  # fmt: skip
            ids = list(s.exec(select(Result.id).where(col(Result.device_id) == device.id)))
            for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
                connection.execute(
                    delete(ResultPayload).where(col(ResultPayload.result_id).in_(chunk))
                )
                connection.execute(delete(Result).where(col(Result.id).in_(chunk)))
            connection.execute(delete(LEADERBOARD).where(LEADERBOARD.c.device_id == device.id))
            connection.execute(
                update(Run).where(col(Run.device_id) == device.id).values(device_id=None)
            )
            connection.execute(
                update(Run)
                .where(col(Run.failed_on_device_id) == device.id)
                .values(failed_on_device_id=None)
            )
            connection.execute(delete(Agent).where(col(Agent.device_id) == device.id))
            name = device.name
            s.delete(device)
            s.commit()
        self._fleet_read_at = -math.inf
        self._read_cache.clear()
        return Removed(name, len(ids), cancelled)

    def revoked_since(self, moment: datetime) -> set[str]:
        """Ids of devices revoked at or after `moment`."""
        with self.session() as s:
            since = col(Device.revoked_at) >= moment
            return set(s.exec(select(Device.id).where(since)).all())

    def _change_device(self, key: str, change: Callable[[Session, Device], None]) -> Device:
        """Applies `change` to one device in a write transaction; the fleet is read
        afresh next time."""
        with self.session(immediate=True) as s:
            device = _device(s, key)
            change(s, device)
            s.add(device)
            s.commit()
            s.refresh(device)
        self._fleet_read_at = -math.inf
        return device

    def accept_hardware(self, key: str) -> Device:
        """The device's hardware as last reported is its hardware now; it leaves review."""

        def accept(_: Session, device: Device) -> None:
            device.accepted_hardware = hardware_signature(identity_of(device))
            device.review = ""

        return self._change_device(key, accept)

    def approve_device(self, key: str) -> Device:
        """A pending device takes work from now on (`serve --require-approval`)."""

        def approve(_: Session, device: Device) -> None:
            if device.revoked_at is not None or device.admission == "rejected":
                raise StoreError(
                    f"{device.name} was {admission_of(device)}: it comes back only by "
                    f"enrolling again with `coordinator token create --device {device.name}`"
                )
            device.admission = "approved"

        return self._change_device(key, approve)

    def reject_device(self, key: str) -> Device:
        """A device is refused for good: as revoked (its agents refused, its session
        ended, its runs requeued), and shown as rejected."""
        self.revoke_device(key, self.retry_base_seconds)
        return self._change_device(key, lambda _, device: setattr(device, "admission", "rejected"))

    def set_operator_state(self, key: str, state: str, note: str) -> Device:
        """`drained`: it finishes the run it holds and takes no more; `maintenance`: it
        takes no work and the run it holds goes back to the queue now; `active`: it takes
        work again. `note` says who set it, when and why."""
        if state not in DEVICE_STATES["operator"]:
            raise StoreError(f"{state!r} is not one of: {', '.join(DEVICE_STATES['operator'])}")

        def set_state(s: Session, device: Device) -> None:
            device.operator_state, device.operator_note = state, note[:500]
            if state == "maintenance":
                agents = s.exec(select(Agent.id).where(Agent.device_id == device.id)).all()
                lifecycle.release_leases(s, list(agents), self.retry_base_seconds)

        return self._change_device(key, set_state)

    def resume_device(self, key: str) -> Device:
        """A drained, in-maintenance, unhealthy or suspended device takes work again, with
        clean failure and check histories."""

        def resume(_: Session, device: Device) -> None:
            device.unhealthy, device.outcomes = "", ""
            device.suspended, device.checks = "", ""
            device.operator_state, device.operator_note = "active", ""

        return self._change_device(key, resume)

    # ---- the run lifecycle's writes (coordinator/lifecycle.py) -----------------------

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """One write transaction, committed when the block ends, rolled back on error."""
        with self.session(immediate=True) as s:
            yield s
            s.commit()

    def close(self) -> None:
        self.engine.dispose()


def _check_may_enroll(token: EnrollmentToken, name: str, device: Device | None) -> None:
    """An enrolled device's name is its identity: only a token made for that device
    (`token create --device NAME`) enrolls under it, and a contributor token never joins
    an operator's device."""
    if token.device_name is not None and token.device_name != name:
        raise StoreError(
            f"this token re-enrolls device {token.device_name!r} only; enroll with --name "
            f"{token.device_name} or use another token"
        )
    if device is None:
        return
    if token.device_name != name:
        raise StoreError(
            f"a device named {name!r} is already enrolled: choose another --name, or ask "
            f"the admin for a token that re-enrolls it (coordinator token create --device {name})"
        )
    if token.contributor and not device.contributor:
        raise StoreError(f"{name} is an operator device: a contributor token cannot enroll it")


def device_seen(s: Session, agent: Agent, hardware: HardwareInfo | None = None) -> Device:
    """A session opened: the device's hardware snapshot is refreshed (in the caller's
    transaction: the writer runs it with the rest of its batch)."""
    now = utcnow()
    device = s.get(Device, agent.device_id, populate_existing=True)
    if device is None:
        raise NotFound("the agent's device is gone")
    if hardware is not None:
        _check_hardware(device, hardware)
        _apply_hardware(device, hardware)
    device.last_seen_at = now
    s.add(device)
    s.exec(update(Agent).where(col(Agent.id) == agent.id).values(last_seen_at=now))
    s.flush()
    return device


def _check_hardware(device: Device, hardware: HardwareInfo) -> None:
    """Other hardware than the accepted puts the device in review (recorded, no work)."""
    reported = hardware_signature(hardware.identity)
    if not device.accepted_hardware:  # a device of a store made before this check
        device.accepted_hardware = reported
    elif reported != device.accepted_hardware and not device.review:
        device.review = (
            f"hardware changed from {device.accepted_hardware} to {reported}: "
            f"`edgebench devices accept {device.name}` if that is right"
        )
        log.warning("device %s in review: %s", device.name, device.review)


def _apply_hardware(device: Device, hardware: HardwareInfo) -> None:
    device.identity_json = hardware.identity.model_dump_json()
    device.hardware_class = hardware_class(hardware.identity)
    device.capabilities_json = hardware.capabilities.model_dump_json()
