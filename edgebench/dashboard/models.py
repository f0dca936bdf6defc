"""The HTTP API's contract: what it takes and what it returns, as plain pydantic models.

This module imports no web framework and no ORM, so the CLI of an agent-only install
uses the same models as the server (the client returns them, typed). The server builds
the public models from its tables in `queries.py`."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edgebench.device import DeviceCapabilities, DeviceIdentity
from edgebench.measure.record import FIELD_NAMES
from edgebench.modelparams import BUCKET_NAMES
from edgebench.protocol import NAME_RE, TAG_RE
from edgebench.workload import FIELD_SECTIONS, SECTIONS, Workload

GIB = 1024**3
# How far the fleet trusts a device's results (coordinator/tables.py: trust_tier).
TRUST_TIERS = ("operator", "contributor")
TrustTier = Literal["operator", "contributor"]
# Where a result stands (coordinator/verification.py): an operator device's result is
# `trusted`; a contributor's starts `unverified` and is checked by replication.
VERIFICATION_STATES = ("trusted", "unverified", "verified", "verified-by-quorum", "disputed",
                       "quarantined")  # fmt: skip
OWNER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$")

# ---- requests --------------------------------------------------------------------


class DeviceSelector(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt constraint must not match all

    devices: list[str] = Field(default_factory=list, max_length=256)  # names; [] = any
    tags: dict[str, str] = Field(default_factory=dict, max_length=32)  # all must match
    arch: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    accelerator: str | None = Field(default=None, pattern=r"^[a-z0-9_-]{1,32}$")
    min_memory_gb: float | None = Field(default=None, ge=0, le=1_000_000)
    hardware_class: str | None = Field(default=None, max_length=600)  # device.hardware_class
    tiers: list[TrustTier] = Field(default_factory=list, max_length=2)  # [] = any tier
    # engine -> the version the device must have installed (replication's "same build")
    engines: dict[str, str] = Field(default_factory=dict, max_length=8)
    not_owners: list[str] = Field(default_factory=list, max_length=8)  # no device of theirs
    every: bool = False

    @field_validator("devices")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not NAME_RE.match(name):
                raise ValueError(f"{name!r} is not a device name")
        return names

    @field_validator("engines")
    @classmethod
    def _engines(cls, engines: dict[str, str]) -> dict[str, str]:
        if any(len(name) > 64 or len(version) > 128 for name, version in engines.items()):
            raise ValueError("an engine name or version is too long")
        return engines

    @field_validator("not_owners")
    @classmethod
    def _owners(cls, owners: list[str]) -> list[str]:
        for owner in owners:
            if not OWNER_RE.match(owner):
                raise ValueError(f"{owner!r} is not an owner name")
        return owners

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: dict[str, str]) -> dict[str, str]:
        for key, value in tags.items():
            if not TAG_RE.match(key) or len(value) > 256:
                raise ValueError(f"bad tag {key!r}")
        return tags

    def is_open(self) -> bool:
        """True when any device matches (nothing to check at lease time)."""
        return self == DeviceSelector(every=self.every)

    def describe(self) -> str:
        parts = [f"device in {', '.join(self.devices)}"] if self.devices else []
        parts += [f"tag {k}={v}" for k, v in sorted(self.tags.items())]
        if self.arch:
            parts.append(f"arch {self.arch}")
        if self.accelerator:
            parts.append(f"accelerator {self.accelerator}")
        if self.min_memory_gb is not None:
            parts.append(f"at least {self.min_memory_gb:g} GiB of memory")
        if self.hardware_class:
            parts.append(f"hardware class {self.hardware_class}")
        if self.tiers:
            parts.append(f"tier {' or '.join(self.tiers)}")
        parts += [f"{engine} {version}" for engine, version in sorted(self.engines.items())]
        if self.not_owners:
            parts.append(f"not owned by {', '.join(self.not_owners)}")
        return " and ".join(parts) or "any device"


class JobCreate(BaseModel):
    """A job: a matrix of models x backends x variants, each run with the workload (its
    own matrix of sizes, repetition and sensor policy, engine settings) on devices the
    selector allows."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(min_length=1, max_length=8)
    backends: list[str] = Field(default_factory=list, max_length=3)  # [] = by model format
    variants: list[str] = Field(default_factory=lambda: [""], min_length=1, max_length=16)
    workload: Workload = Field(default_factory=Workload)
    device: str | None = Field(default=None, pattern=NAME_RE.pattern)  # = selector.devices
    selector: DeviceSelector = Field(default_factory=DeviceSelector)
    # Higher first; within one priority, the submitter with the fewest runs in flight
    # goes next (fair share), then the oldest run.
    priority: int = Field(default=0, ge=-100, le=100)
    submitter: str = Field(default="default", pattern=NAME_RE.pattern)

    @model_validator(mode="before")
    @classmethod
    def _flat_workload(cls, data: Any) -> Any:
        """Workload settings by their stable flat names (edgebench 0.1's body) are taken
        for one release, and folded into `workload`."""
        if not isinstance(data, dict) or not set(data) & set(FIELD_SECTIONS):
            return data
        if "workload" in data:
            raise ValueError("give the workload settings in `workload` or flat, not both")
        workload: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
        rest = {}
        for name, value in data.items():
            if name in FIELD_SECTIONS:
                if name == "flash_attn" and isinstance(value, bool):
                    value = "on" if value else "off"
                workload[FIELD_SECTIONS[name]][name] = value
            else:
                rest[name] = value
        return {**rest, "workload": workload}

    @model_validator(mode="after")
    def _device_is_a_selector(self) -> JobCreate:
        if self.device and self.device not in self.selector.devices:
            self.selector.devices.append(self.device)
        return self

    @field_validator("models")
    @classmethod
    def _shas(cls, models: list[str]) -> list[str]:
        for sha in models:
            if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                raise ValueError(f"{sha!r} is not a sha256")
        return models


TOKEN_LIFETIME_SECONDS = 24 * 3600  # an enrollment token's default lifetime


class TokenCreate(BaseModel):
    contributor: bool = False
    expires_in_seconds: int = Field(default=TOKEN_LIFETIME_SECONDS, ge=60, le=365 * 24 * 3600)
    uses: int = Field(default=1, ge=1, le=10_000, description="how many agents it may enroll")
    device: str | None = Field(
        default=None,
        max_length=63,
        description="re-enroll this enrolled device (its name); unset: a new device only",
    )
    viewer: bool = Field(
        default=False,
        description="a read-only token for the dashboard and API (where reads need one); "
        "it enrolls nothing",
    )
    owner: str = Field(
        default="",
        pattern=r"^$|" + OWNER_RE.pattern,
        description="who owns the devices it enrolls (contributors: quorum needs two owners)",
    )

    @model_validator(mode="after")
    def _viewer_enrolls_nothing(self) -> TokenCreate:
        if self.viewer and (self.contributor or self.device is not None or self.uses != 1):
            raise ValueError("a viewer token enrolls nothing: no contributor, device or uses")
        if self.viewer and self.owner:
            raise ValueError("a viewer token enrolls nothing: no owner")
        return self


class TokenCreated(BaseModel):
    token: str


class TokenPublic(BaseModel):
    """An enrollment token as the admin sees it later (its secret is not kept)."""

    id: str
    state: Literal["active", "used", "expired", "revoked"]
    viewer: bool  # reads the dashboard and API; enrolls nothing
    contributor: bool
    owner: str  # who owns the devices it enrolls
    device_name: str | None  # re-enrolls this device only
    created_at: datetime
    expires_at: datetime | None
    uses_left: int
    used_at: datetime | None


class ResultDeleted(BaseModel):
    id: str  # the deleted result's full id


class DeviceRemoved(BaseModel):
    name: str
    results_deleted: int  # its results, deleted with it
    runs_cancelled: int  # queued runs pinned to it or replicating its results


class AuditEntryPublic(BaseModel):
    """One admin action, allowed or refused."""

    at: datetime
    actor: str  # "admin", or "unauthenticated" for a refused attempt
    action: str  # method and path
    status: int
    address: str


# ---- responses -------------------------------------------------------------------


class ArtifactPublic(BaseModel):
    sha256: str
    filename: str
    size_bytes: int
    format: str
    parameters: int | None  # counted from the file's headers; None when unknown


class DevicePublic(BaseModel):
    id: str
    name: str
    online: bool
    # The one word for lists, the weightiest state first: revoked or rejected (its
    # credentials refused), pending (awaits approval), review (its hardware changed),
    # suspended (replication disputed it), unhealthy, maintenance, drained (the
    # operator's), then offline, busy (holds a run) or idle.
    status: str
    unhealthy: str = ""  # why it takes no work until `devices resume`; "" = healthy
    suspended: str = ""  # why replication suspended it (until `devices resume`)
    # the device state model (coordinator/tables.py DEVICE_STATES), axis by axis
    admission: str = "approved"  # pending, approved, rejected, revoked
    operator_state: str = "active"  # active, drained, maintenance
    operator_note: str = ""  # who set it, when and why
    automatic: list[str] = []  # unhealthy, review, suspended: any at once
    liveness: str = "offline"  # online (idle), busy, offline
    owner: str = ""  # who owns it, as its enrollment token said
    checks: str = ""  # its last replication checks, newest first: A agreed, D disputed
    revoked_at: datetime | None = None  # `devices revoke`: its agents are refused
    review: str = ""  # why it is in hardware review (no work until `devices accept`)
    last_seen_at: datetime | None
    identity: DeviceIdentity  # what the device is
    capabilities: DeviceCapabilities  # what it had installed when it last connected
    hardware_class: str  # edgebench.device.hardware_class
    trust_tier: str  # operator or contributor
    tags: dict[str, str]
    contributor: bool
    current_run: RunPublic | None = None  # the run it holds now


class RunPublic(BaseModel):
    id: str
    job_id: str
    model_sha256: str
    backend: str
    variant: str
    n_depth: int
    n_prompt: int
    n_gen: int
    state: str  # queued, leased, running, succeeded, failed, cancelled, dead
    device_id: str | None
    device_name: str | None
    attempts: int
    lease_epoch: int
    not_before: datetime | None
    phase: str
    rep: int
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    checks_result_id: str | None = None  # a replication run: the result it checks


class ModelRefPublic(BaseModel):
    sha256: str
    filename: str
    format: str


class JobPublic(BaseModel):
    id: str
    created_at: datetime
    state: str
    models: list[ModelRefPublic]
    backends: list[str]
    reps: int  # 0 = auto
    spec: dict[str, Any]  # the whole request as it was accepted
    device_name: str | None
    priority: int
    submitter: str
    runs: list[RunPublic]
    waiting: str | None = None  # why queued runs have not gone out
    warnings: list[str] = []  # said once, when the job is submitted


class JobRetried(BaseModel):
    retried_runs: int  # failed and dead runs queued again
    job: JobPublic


class JobCancelled(BaseModel):
    cancelled_runs: int  # runs this call stopped; finished ones keep their results
    job: JobPublic


class ResultSummary(BaseModel):
    """A result as lists carry it: who, what, the stable fields; no sensor samples, raw
    timestamps or environment (the result's own endpoint has those)."""

    id: str
    run_id: str
    job_id: str
    device_id: str
    device_name: str
    hardware_class: str  # edgebench.device.hardware_class of the device
    trust_tier: str  # operator or contributor
    # trusted (an operator device's), or a contributor's: unverified, verified,
    # verified-by-quorum, disputed, quarantined (VERIFICATION_STATES)
    verification: str
    model: str  # the file or folder name it was uploaded as
    parameters: int | None  # counted from the model file; None when unknown
    size_bucket: str  # the parameter-size bucket (modelparams.SIZE_BUCKETS), or unknown
    created_at: datetime
    fields: dict[str, Any]
    engine_version: str
    definitions_version: str


class ResultPublic(ResultSummary):
    """One result with everything it carries."""

    source_sha256: str
    verification_note: str  # why: the figures replication compared, or a failed check
    reps_mode: str
    window_s: float | None
    windows_tps: list[float]
    environment: dict[str, Any]
    sensors: dict[str, Any]
    rep_timings: list[dict[str, Any]] | None = None


class LeaderboardRow(BaseModel):
    """One group of comparable results (same model, variant, backend, device, test,
    threads and engine settings in force) and the result it is shown by."""

    key: str
    results: int  # results in the group
    settings: dict[str, Any]  # the engine settings in force
    result: ResultSummary  # the newest clean one, or the best, as asked


Item = TypeVar("Item")


class Page(BaseModel, Generic[Item]):
    items: list[Item]
    total: int  # rows matching the filters, over all pages
    offset: int
    limit: int


class LeaderboardPage(Page[LeaderboardRow]):
    test: str  # the test shown ("all", or as TEST_RE writes it)
    tests: list[str]  # every test with results, the most common first


# ---- list queries (query strings of the API and the pages alike) ------------------

TEST_RE = r"^p(\d{1,7})-g(\d{1,7})(?:-d(\d{1,7}))?$"  # prompt, generated, depth
IDENTITY_COLUMNS = ("created_at", "device", "model", "hardware_class")
SORTABLE = (*IDENTITY_COLUMNS, *(name for name in FIELD_NAMES if name != "model_sha256"))
_TEXT = Field(default=None, max_length=200)


def test_label(n_prompt: int, n_gen: int, n_depth: int) -> str:
    return f"p{n_prompt}-g{n_gen}" + (f"-d{n_depth}" if n_depth else "")


class ResultQuery(BaseModel):
    """Filters, sort and page of a result list; every view keeps these in its URL."""

    q: str | None = Field(
        default=None, max_length=200, description="text in model, device, variant, backend"
    )
    model: str | None = Field(default=None, max_length=255, description="model file name")
    size: str | None = Field(default=None, description=f"one of: {', '.join(BUCKET_NAMES)}")
    variant: str | None = _TEXT
    backend: str | None = _TEXT
    engine_version: str | None = _TEXT
    arch: str | None = _TEXT
    accelerator: str | None = _TEXT
    device: str | None = _TEXT
    hardware_class: str | None = _TEXT
    tier: str | None = Field(default=None, description=f"one of: {', '.join(TRUST_TIERS)}")
    verification: str | None = Field(
        default=None, description=f"one of: {', '.join(VERIFICATION_STATES)}"
    )
    job: str | None = Field(default=None, max_length=64, description="job id or prefix")
    test: str | None = Field(
        default=None, max_length=40, description='"all", or a test such as p512-g128 (-d depth)'
    )
    since: date | None = None
    until: date | None = None
    hide_noisy: bool = False
    sort: str = Field(default="created_at", description=f"one of: {', '.join(SORTABLE)}")
    order: Literal["asc", "desc"] = "desc"
    offset: int = Field(default=0, ge=0, le=10_000_000)
    limit: int = Field(default=50, ge=1, le=500)

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, data: Any) -> Any:
        """An HTML form sends an untouched select or date as an empty value."""
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value != ""}
        return data

    @field_validator("size", "tier", "verification")
    @classmethod
    def _known(cls, value: str | None, info: ValidationInfo) -> str | None:
        known = {"size": BUCKET_NAMES, "tier": TRUST_TIERS}.get(
            info.field_name or "", VERIFICATION_STATES
        )
        if value is not None and value not in known:
            raise ValueError(f"{value!r} is not one of: {', '.join(known)}")
        return value

    @field_validator("sort")
    @classmethod
    def _sortable(cls, sort: str) -> str:
        if sort not in SORTABLE:
            raise ValueError(f"cannot sort by {sort!r}; one of: {', '.join(SORTABLE)}")
        return sort

    @field_validator("test")
    @classmethod
    def _test(cls, test: str | None) -> str | None:
        if test not in (None, "", "all") and not re.match(TEST_RE, test or ""):
            raise ValueError(f"{test!r} is not a test; write it as p512-g128 or p512-g128-d1024")
        return test or None

    def test_sizes(self) -> tuple[int, int, int] | None:
        """(n_prompt, n_gen, n_depth) of the test filter, None for all tests."""
        found = re.match(TEST_RE, self.test or "")
        if not found:
            return None
        return int(found[1]), int(found[2]), int(found[3] or 0)


class LeaderboardQuery(ResultQuery):
    show: Literal["newest", "best"] = "newest"  # per group: the newest clean or fastest
    sort: str = "decode_tps"


DevicePublic.model_rebuild()
