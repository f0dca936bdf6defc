"""Reads for the JSON API and the pages (both render the same objects): the store's rows
become the public models of `models.py` here, and only here."""

from __future__ import annotations

import json

from edgebench.coordinator.store import Store
from edgebench.coordinator.tables import (
    Artifact,
    Device,
    Job,
    Result,
    Run,
    RunState,
    capabilities_of,
    identity_of,
    is_online,
)
from edgebench.dashboard.models import (
    ArtifactPublic,
    DevicePublic,
    JobPublic,
    ModelRefPublic,
    ResultPublic,
    RunPublic,
)
from edgebench.measure.packing import unpack_reps
from edgebench.measure.record import FIELD_NAMES


def device_public(device: Device) -> DevicePublic:
    return DevicePublic(
        id=device.id,
        name=device.name,
        online=is_online(device),
        last_seen_at=device.last_seen_at,
        identity=identity_of(device),
        capabilities=capabilities_of(device),
        tags=json.loads(device.tags_json),
        contributor=device.contributor,
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


def result_public(result: Result, device_name: str, model: str, *, timings: bool) -> ResultPublic:
    reps = None
    if timings:
        reps = [
            {"start_ns": r.start_ns, "prefill_ns": r.prefill_ns, "token_ns": list(r.token_ns)}
            for r in unpack_reps(result.timings)
        ]
    return ResultPublic(
        id=result.id,
        run_id=result.run_id,
        job_id=result.job_id,
        device_id=result.device_id,
        device_name=device_name,
        model=model,
        created_at=result.created_at,
        fields={name: getattr(result, name) for name in FIELD_NAMES},
        engine_version=result.engine_version,
        definitions_version=result.definitions_version,
        source_sha256=result.source_sha256,
        reps_mode=result.reps_mode,
        window_s=result.window_s,
        windows_tps=json.loads(result.windows_json),
        environment=json.loads(result.environment_json),
        sensors=json.loads(result.sensors_json),
        rep_timings=reps,
    )


def devices(store: Store) -> list[DevicePublic]:
    return [device_public(device) for device in store.list_devices()]


def device(store: Store, key: str) -> DevicePublic:
    return device_public(store.get_device(key))


def jobs(store: Store, limit: int = 100) -> list[JobPublic]:
    names, artifacts = store.device_names(), store.artifacts()
    return [
        job_public(job, store.runs_of(job.id), names, artifacts) for job in store.list_jobs(limit)
    ]


def job(store: Store, job_id: str, *, why_waiting: bool = True) -> JobPublic:
    """A job with its runs and, unless told not to (a job just queued, whose submitter
    already heard the warnings), why its queued runs wait."""
    found = store.get_job(job_id)
    public = job_public(found, store.runs_of(found.id), store.device_names(), store.artifacts())
    if not why_waiting:
        return public
    return public.model_copy(update={"waiting": store.waiting(found.id)})


def results(
    store: Store,
    *,
    job_id: str | None = None,
    device_id: str | None = None,
    timings: bool = False,
) -> list[ResultPublic]:
    names, artifacts = store.device_names(), store.artifacts()
    return [
        result_public(
            result,
            names.get(result.device_id, "?"),
            _model_name(artifacts, result.source_sha256 or result.model_sha256),
            timings=timings,
        )
        for result in store.list_results(job_id=job_id, device_id=device_id)
    ]


def _model_name(artifacts: dict[str, Artifact], sha256: str) -> str:
    artifact = artifacts.get(sha256)
    return artifact.filename if artifact else sha256[:12]
