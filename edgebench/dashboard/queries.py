"""Reads for the JSON API and the pages (both render the same objects): the store's rows
become the public models of `models.py` here, and only here."""

from __future__ import annotations

import json
from typing import Literal

from edgebench.coordinator.store import Store
from edgebench.coordinator.tables import (
    Artifact,
    Device,
    EnrollmentToken,
    Job,
    Run,
    RunState,
    admission_of,
    automatic_states,
    capabilities_of,
    identity_of,
    is_online,
    trust_tier,
    utcnow,
)
from edgebench.dashboard.listing import Lookup, summary
from edgebench.dashboard.models import (
    ArtifactPublic,
    DevicePublic,
    JobPublic,
    ModelRefPublic,
    Page,
    ResultPublic,
    RunPublic,
    TokenPublic,
)
from edgebench.device import hardware_class
from edgebench.measure.packing import unpack_reps


def device_public(device: Device, current: RunPublic | None = None) -> DevicePublic:
    online = is_online(device)
    identity = identity_of(device)
    return DevicePublic(
        id=device.id,
        name=device.name,
        online=online,
        status=_status(device, online, current),
        unhealthy=device.unhealthy,
        suspended=device.suspended,
        admission=admission_of(device),
        operator_state=device.operator_state,
        operator_note=device.operator_note,
        automatic=automatic_states(device),
        liveness="offline" if not online else "busy" if current else "online",
        owner=device.owner,
        checks=device.checks,
        revoked_at=device.revoked_at,
        review=device.review,
        last_seen_at=device.last_seen_at,
        identity=identity,
        capabilities=capabilities_of(device),
        hardware_class=hardware_class(identity),
        trust_tier=trust_tier(device),
        tags=json.loads(device.tags_json),
        contributor=device.contributor,
        current_run=current,
    )


def _status(device: Device, online: bool, current: RunPublic | None) -> str:
    admission = admission_of(device)
    if admission != "approved":
        return admission
    for state in ("review", "suspended", "unhealthy"):
        if state in automatic_states(device):
            return state
    if device.operator_state != "active":
        return device.operator_state
    return "offline" if not online else "busy" if current else "idle"


def token(row: EnrollmentToken) -> TokenPublic:
    state: Literal["active", "used", "expired", "revoked"] = "active"
    if row.revoked_at is not None:
        state = "revoked"
    elif row.uses_left < 1 and not row.viewer:
        state = "used"
    elif row.expires_at is not None and row.expires_at < utcnow():
        state = "expired"
    return TokenPublic(
        id=row.id,
        state=state,
        viewer=row.viewer,
        contributor=row.contributor,
        owner=row.owner,
        device_name=row.device_name,
        created_at=row.created_at,
        expires_at=row.expires_at,
        uses_left=row.uses_left,
        used_at=row.used_at,
    )


def artifact_public(artifact: Artifact) -> ArtifactPublic:
    return ArtifactPublic(**artifact.model_dump(exclude={"created_at"}))


def run_public(run: Run, device_names: dict[str, str]) -> RunPublic:
    data = run.model_dump(exclude={"device_name"})
    name = device_names.get(run.device_id or "") or run.device_name
    return RunPublic(**data, device_name=name)


def job_state(runs: list[Run]) -> str:
    """A job's state, from its runs alone (a finished run stays what it was)."""
    states = {run.state for run in runs}
    if states & {RunState.LEASED, RunState.RUNNING}:
        return "running"
    if RunState.QUEUED in states:
        return "queued"
    if RunState.CANCELLED in states:
        return "cancelled"
    if states & {RunState.FAILED, RunState.DEAD}:
        return "failed"
    return "succeeded"


def job_public(
    job: Job, runs: list[Run], device_names: dict[str, str], artifacts: dict[str, Artifact]
) -> JobPublic:
    spec = json.loads(job.spec_json)
    models = [
        ModelRefPublic(sha256=sha, filename=artifacts[sha].filename, format=artifacts[sha].format)
        for sha in spec["models"]
        if sha in artifacts
    ]
    return JobPublic(
        id=job.id,
        created_at=job.created_at,
        state=job_state(runs),
        models=models,
        backends=sorted({run.backend for run in runs}),
        reps=spec["workload"]["repetitions"]["reps"],
        spec=spec,
        device_name=job.device_name,
        priority=job.priority,
        submitter=job.submitter,
        runs=[run_public(run, device_names) for run in runs],
    )


def result_public(store: Store, key: str, *, timings: bool = True) -> ResultPublic:
    """One result with everything it carries (by id or a unique id prefix)."""
    result, payload = store.get_result(key)
    lookup = Lookup.read(store)
    reps = None
    if timings:
        reps = [
            {"start_ns": r.start_ns, "prefill_ns": r.prefill_ns, "token_ns": list(r.token_ns)}
            for r in unpack_reps(payload.timings)
        ]
    return ResultPublic(
        **summary(result, lookup).model_dump(),
        source_sha256=result.source_sha256,
        verification_note=result.verification_note,
        reps_mode=result.reps_mode,
        window_s=result.window_s,
        windows_tps=json.loads(payload.windows_json),
        environment=json.loads(payload.environment_json),
        sensors=json.loads(payload.sensors_json),
        rep_timings=reps,
    )


def _live_runs(store: Store) -> dict[str, RunPublic]:
    """{device id: the run it holds}."""
    names = store.device_names()
    return {
        run.device_id: run_public(run, names)
        for run in store.live_runs()
        if run.device_id is not None
    }


def devices(store: Store, offset: int = 0, limit: int = 1000) -> Page[DevicePublic]:
    fleet = store.fleet()
    live = _live_runs(store)
    shown = fleet[offset : offset + limit]
    return Page[DevicePublic](
        items=[device_public(d, live.get(d.id)) for d in shown],
        total=len(fleet),
        offset=offset,
        limit=limit,
    )


def device(store: Store, key: str) -> DevicePublic:
    found = store.get_device(key)
    return device_public(found, _live_runs(store).get(found.id))


def jobs(store: Store, offset: int = 0, limit: int = 100) -> Page[JobPublic]:
    """The newest jobs first, each with its runs (two queries, whatever the page size)."""
    names, artifacts = store.device_names(), store.artifacts()
    listed, runs, total = store.jobs_with_runs(offset, limit)
    return Page[JobPublic](
        items=[job_public(job, runs.get(job.id, []), names, artifacts) for job in listed],
        total=total,
        offset=offset,
        limit=limit,
    )


def job(store: Store, job_id: str, *, why_waiting: bool = True) -> JobPublic:
    """A job with its runs and, unless told not to (a job just queued, whose submitter
    already heard the warnings), why its queued runs wait."""
    found = store.get_job(job_id)
    public = job_public(found, store.runs_of(found.id), store.device_names(), store.artifacts())
    if not why_waiting:
        return public
    return public.model_copy(update={"waiting": store.waiting(found.id)})
