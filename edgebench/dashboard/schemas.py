"""What the JSON API returns. Table classes never leave the server as they are."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel

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
from edgebench.device import DeviceCapabilities, DeviceIdentity
from edgebench.measure.packing import unpack_reps
from edgebench.measure.record import FIELD_NAMES


class DevicePublic(BaseModel):
    id: str
    name: str
    online: bool
    last_seen_at: datetime | None
    identity: DeviceIdentity  # what the device is
    capabilities: DeviceCapabilities  # what it had installed when it last connected
    tags: dict[str, str]
    contributor: bool

    @classmethod
    def of(cls, device: Device) -> DevicePublic:
        return cls(
            id=device.id,
            name=device.name,
            online=is_online(device),
            last_seen_at=device.last_seen_at,
            identity=identity_of(device),
            capabilities=capabilities_of(device),
            tags=json.loads(device.tags_json),
            contributor=device.contributor,
        )


class RunPublic(BaseModel):
    id: str
    job_id: str
    model_sha256: str
    backend: str
    variant: str
    n_depth: int
    n_prompt: int
    n_gen: int
    state: RunState
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

    @classmethod
    def of(cls, run: Run, device_names: dict[str, str]) -> RunPublic:
        data = run.model_dump(exclude={"device_name"})
        name = device_names.get(run.device_id or "") or run.device_name
        return cls(**data, device_name=name)


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

    @classmethod
    def of(
        cls,
        job: Job,
        runs: list[Run],
        device_names: dict[str, str],
        artifacts: dict[str, Artifact],
    ) -> JobPublic:
        spec = json.loads(job.spec_json)
        models = [
            ModelRefPublic(
                sha256=sha, filename=artifacts[sha].filename, format=artifacts[sha].format
            )
            for sha in spec["models"]
            if sha in artifacts
        ]
        return cls(
            id=job.id,
            created_at=job.created_at,
            state=job_state(job, runs),
            models=models,
            backends=sorted({run.backend for run in runs}),
            reps=spec["workload"]["repetitions"]["reps"],
            spec=spec,
            device_name=job.device_name,
            priority=job.priority,
            submitter=job.submitter,
            runs=[RunPublic.of(run, device_names) for run in runs],
        )


def job_state(job: Job, runs: list[Run]) -> str:
    states = {run.state for run in runs}
    if states & {RunState.LEASED, RunState.RUNNING}:
        return "running"
    if RunState.QUEUED in states:
        return "queued"
    if RunState.CANCELLED in states:  # a finished run stays what it was
        return "cancelled"
    if states & {RunState.FAILED, RunState.DEAD}:
        return "failed"
    return "succeeded"


class JobCancelled(BaseModel):
    cancelled_runs: int  # runs this call stopped; finished ones keep their results
    job: JobPublic


class ResultPublic(BaseModel):
    id: str
    run_id: str
    job_id: str
    device_id: str
    device_name: str
    model: str  # the file or folder name it was uploaded as
    created_at: datetime
    fields: dict[str, Any]
    engine_version: str
    definitions_version: str
    source_sha256: str
    reps_mode: str
    window_s: float | None
    windows_tps: list[float]
    environment: dict[str, Any]
    sensors: dict[str, Any]
    rep_timings: list[dict[str, Any]] | None = None

    @classmethod
    def of(cls, result: Result, device_name: str, model: str, *, timings: bool) -> ResultPublic:
        reps = None
        if timings:
            reps = [
                {"start_ns": r.start_ns, "prefill_ns": r.prefill_ns, "token_ns": list(r.token_ns)}
                for r in unpack_reps(result.timings)
            ]
        return cls(
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
