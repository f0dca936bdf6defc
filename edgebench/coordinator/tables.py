"""SQLModel tables of the coordinator's store. Ids are UUID strings; times are UTC."""

from __future__ import annotations

import functools
import uuid
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, String, Table, Text
from sqlmodel import Field, SQLModel, col

from edgebench.dashboard.models import TRUST_TIERS
from edgebench.device import DeviceCapabilities, DeviceIdentity
from edgebench.measure.record import FIELD_NAMES


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class RunState(str, Enum):
    QUEUED = "queued"
    LEASED = "leased"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD = "dead"  # every attempt's lease expired: the last error says why

    @property
    def is_final(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.DEAD)


class Setting(SQLModel, table=True):
    key: str = Field(primary_key=True)
    value: str


class AuditEntry(SQLModel, table=True):
    """One admin action, allowed or refused: who, what, when, from where."""

    id: str = Field(default_factory=new_id, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor: str  # "admin", or "unauthenticated" for a refused attempt
    action: str  # the request: method and path ("POST /api/v1/tokens")
    status: int  # the HTTP status it was answered with
    address: str  # the client's address


class Device(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True)
    name: str = Field(index=True, unique=True)
    # edgebench.device's two shapes, as the agent last sent them (checked JSON)
    identity_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    capabilities_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    # edgebench.device.hardware_class of the identity, kept beside it: lists sort by it
    hardware_class: str = ""
    tags_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    contributor: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime | None = None
    # Its last outcomes, newest first: S a run it finished, F a run it failed that
    # another device then finished (lifecycle.HEALTH_WINDOW of them).
    outcomes: str = ""
    unhealthy: str = ""  # why it takes no work until `devices resume`; "" = healthy
    # `devices revoke`: its agents' credentials are refused from then on, its live
    # sessions end within a heartbeat and it takes no work
    revoked_at: datetime | None = None
    # The hardware it was enrolled (or last accepted) with, as device.hardware_signature
    # writes it; a hello reporting other hardware puts it in review (no work) until an
    # admin accepts the change (`devices accept`), as an SSH host key change would.
    accepted_hardware: str = ""
    review: str = ""  # why it is in review; "" = not
    owner: str = ""  # who owns it, as its enrollment token said (quorum needs two)
    # The device state model (DEVICE_STATES): admission and the operator's word; the
    # automatic states are `unhealthy`, `review` and `suspended`, liveness is derived.
    admission: str = "approved"  # pending (serve --require-approval), approved, rejected
    operator_state: str = "active"  # active, drained, maintenance
    operator_note: str = ""  # who set the operator state, when and why
    # Its last replication checks, newest first: A agreed, D disputed (verification.py);
    # a contributor with too many D is suspended (no work) until `devices resume`.
    checks: str = ""
    suspended: str = ""


class Agent(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True)
    device_id: str = Field(foreign_key="device.id", index=True)
    secret_sha256: str
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime | None = None


class EnrollmentToken(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True)
    token_sha256: str = Field(index=True, unique=True)
    contributor: bool = False
    # set: the token re-enrolls this device (and nothing else); unset: a new device only
    device_name: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    uses_left: int = 1  # enrollments it may still make
    revoked_at: datetime | None = None
    used_at: datetime | None = None  # its last use
    used_by_agent_id: str | None = None
    # a viewer token: reads the dashboard and API where reads need a token; enrolls nothing
    viewer: bool = False
    owner: str = ""  # given to the devices it enrolls


class Artifact(SQLModel, table=True):
    sha256: str = Field(primary_key=True)
    filename: str
    size_bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
    format: str
    # counted from the file's headers when it is stored; None: not counted or unreadable
    parameters: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)


class Job(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)
    # The validated request (models, backends, variants, sizes, settings) as JSON; the
    # matrix it describes is expanded into runs when the job is stored.
    spec_json: str = Field(sa_column=Column(Text, nullable=False))
    device_name: str | None = None  # the one device it is pinned to, if any
    selector_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    cancelled: bool = False
    priority: int = 0
    submitter: str = "default"


class Run(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True)
    job_id: str = Field(foreign_key="job.id", index=True)
    # the test of the job's matrix this run measures
    model_sha256: str = Field(foreign_key="artifact.sha256")
    backend: str
    variant: str
    n_depth: int
    n_prompt: int
    n_gen: int
    state: RunState = Field(default=RunState.QUEUED, index=True)
    device_name: str | None = None  # pinned to this device ("every", or one named device)
    # The job's selector (selectors.DeviceSelector as JSON), checked when a device claims.
    selector_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    priority: int = 0
    submitter: str = "default"
    lease_request_id: str | None = None  # the agent's WorkRequest this lease answers
    device_id: str | None = Field(default=None, foreign_key="device.id", index=True)
    agent_id: str | None = Field(default=None, index=True)  # a round's held-by lookup
    lease_epoch: int = 0
    lease_expires_at: datetime | None = None
    attempts: int = 0
    not_before: datetime | None = None  # retry backoff: not leased again before this
    # the device a first failure happened on: retried elsewhere, never there again
    failed_on_device_id: str | None = None
    # a replication run: it measures this contributor result's test again (verification.py)
    checks_result_id: str | None = None
    phase: str = ""
    rep: int = 0
    error: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Result(SQLModel, table=True):
    id: str = Field(primary_key=True)  # made by the agent: the idempotency key
    run_id: str = Field(foreign_key="run.id", index=True, unique=True)
    job_id: str = Field(foreign_key="job.id", index=True)
    device_id: str = Field(foreign_key="device.id", index=True)
    payload_sha256: str
    created_at: datetime = Field(default_factory=utcnow, index=True)
    backend: str
    variant: str
    model_sha256: str
    model_size_mb: float
    threads: int
    n_depth: int
    n_prompt: int
    n_gen: int
    reps: int
    load_ms: float
    ttft_ms: float
    ttft_ms_std: float
    prefill_tps: float
    prefill_tps_std: float
    prefill_tps_ci95: float
    decode_tps: float
    decode_tps_std: float
    decode_tps_ci95: float
    decode_tps_per_core: float
    decode_tps_per_ghz_core: float | None = None
    itl_p50_ms: float
    itl_p90_ms: float
    itl_p95_ms: float
    itl_p99_ms: float
    itl_max_ms: float
    e2e_ms: float
    e2e_ms_std: float
    peak_rss_mb: float
    gpu_mem_mb: float | None = None
    other_cpu_pct: float | None = None
    noisy: bool = False
    stability: float | None = None
    avg_power_w: float | None = None
    prefill_j_per_token: float | None = None
    decode_j_per_token: float | None = None
    temp_max_c: float | None = None
    throttled: bool | None = None
    engine_version: str = ""
    definitions_version: str = ""
    source_sha256: str = ""
    reps_mode: str = "fixed"
    window_s: float | None = None
    # dashboard.models.VERIFICATION_STATES: "trusted" from an operator device, else where
    # the checks of coordinator/verification.py have got to, and why
    verification: str = Field(default="trusted", index=True)
    verification_note: str = Field(default="", sa_column=Column(Text, nullable=False))
    # the run that replicates it; "" when none will (the note says why)
    replica_run_id: str | None = None


class ResultPayload(SQLModel, table=True):
    """What a result carries beyond its fields (tens of KB), in a table of its own: the
    result table's rows stay narrow, so that lists, counts and sorts over 100,000 results
    read a few pages per thousand rows instead of one page or more per row."""

    __tablename__ = "result_payload"

    result_id: str = Field(foreign_key="result.id", primary_key=True)
    windows_json: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    environment_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    sensors_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    # Raw per-token timestamps of every rep, packed (see edgebench.measure.packing).
    timings: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


PAYLOAD_COLUMNS = ("windows_json", "environment_json", "sensors_json", "timings")


# What a result list reads of a result (never its payload): the summary's columns.
SUMMARY_COLUMNS = ("id", "run_id", "job_id", "device_id", "created_at", "source_sha256",
                   "engine_version", "definitions_version", "verification",
                   *FIELD_NAMES)  # fmt: skip
LEADERBOARD_VIEWS = ("newest", "best")


def _copy(name: str) -> Column[Any]:
    column = Result.__table__.c[name]  # type: ignore[attr-defined]
    return Column("result_id" if name == "id" else name, column.type, nullable=column.nullable)


# The leaderboard, kept up to date as results are stored (coordinator/leaderboard.py): per
# group of comparable results (one model x variant x backend x device x test x threads x
# engine settings in force, so unlike runs are never averaged) and per view, a copy of
# the summary columns of the result that view shows (`newest`: the newest not marked
# noisy, `best`: the fastest decode not marked noisy; else the newest). Reading a
# leaderboard page, filtered and sorted on any field, reads this table alone.
LEADERBOARD = Table(
    "leaderboard",
    SQLModel.metadata,
    Column("key", String, primary_key=True),  # sha256 of the group's values
    Column("view", String, primary_key=True),  # one of LEADERBOARD_VIEWS
    Column("results", Integer, nullable=False),  # how many results the group has
    Column("settings_json", Text, nullable=False),  # the engine settings in force
    *(_copy(name) for name in SUMMARY_COLUMNS),
    # a test's rows fastest first: the default view reads the index's first rows (0013)
    Index("ix_leaderboard_test_speed", "view", "n_prompt", "n_gen", "n_depth", "decode_tps"),
    Index("ix_leaderboard_device_id", "device_id"),
    postgresql_with={"fillfactor": 70},  # room for updates in place (migration 0010)
)


# The claim reads this index in its order: per submitter, highest priority first, then
# oldest (priority descending, so one index scan serves the claim's ORDER BY).
Index(
    "ix_run_queue",
    col(Run.state),
    col(Run.submitter),
    col(Run.priority).desc(),
    col(Run.created_at),
)


@functools.lru_cache(maxsize=4096)
def _identity(text: str) -> DeviceIdentity:
    return DeviceIdentity.model_validate_json(text)


@functools.lru_cache(maxsize=4096)
def _capabilities(text: str) -> DeviceCapabilities:
    return DeviceCapabilities.model_validate_json(text)


def identity_of(device: Device) -> DeviceIdentity:
    """What the device is (parsed once per distinct text: claims read it per candidate)."""
    return _identity(device.identity_json or "{}")


def capabilities_of(device: Device) -> DeviceCapabilities:
    return _capabilities(device.capabilities_json or "{}")


ONLINE_WITHIN = timedelta(seconds=30)  # a device heard from within this is online


def is_online(device: Device) -> bool:
    return device.last_seen_at is not None and utcnow() - device.last_seen_at < ONLINE_WITHIN


# One device state model, four independent axes; a device takes work only when it is
# approved, active, has no automatic state and is online and idle. The dashboard's and
# the CLI's one-word status (dashboard/queries.py) reads them in this order of weight.
DEVICE_STATES = {
    "admission": ("pending", "approved", "rejected", "revoked"),  # revoked: revoked_at
    "operator": ("active", "drained", "maintenance"),
    "automatic": ("unhealthy", "review", "suspended"),  # any at once; none: ""
    "liveness": ("online", "busy", "offline"),
}


def admission_of(device: Device) -> str:
    """Rejected (refused at admission, cut off as revoked) stays what it is."""
    if device.revoked_at is not None and device.admission != "rejected":
        return "revoked"
    return device.admission


def automatic_states(device: Device) -> list[str]:
    why = {"unhealthy": device.unhealthy, "review": device.review, "suspended": device.suspended}
    return [state for state in DEVICE_STATES["automatic"] if why[state]]


def takes_work(device: Device) -> bool:
    """Whether claims may give it a run (liveness aside)."""
    return (
        admission_of(device) == "approved"
        and device.operator_state == "active"
        and not automatic_states(device)
    )


def trust_tier(device: Device) -> str:
    """How far the fleet trusts a device's results: "operator" for devices enrolled with
    an operator's token, "contributor" for donated runners."""
    operator, contributor = TRUST_TIERS
    return contributor if device.contributor else operator
