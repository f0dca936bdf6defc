"""Read models for the JSON API and the pages; both render the same objects."""

from __future__ import annotations

from edgebench.coordinator.store import Store
from edgebench.coordinator.tables import Artifact
from edgebench.dashboard.schemas import DevicePublic, JobPublic, ResultPublic


def _device_names(store: Store) -> dict[str, str]:
    return store.device_names()


def devices(store: Store) -> list[DevicePublic]:
    return [DevicePublic.of(device) for device in store.list_devices()]


def device(store: Store, key: str) -> DevicePublic:
    return DevicePublic.of(store.get_device(key))


def jobs(store: Store, limit: int = 100) -> list[JobPublic]:
    names, artifacts = _device_names(store), store.artifacts()
    return [
        JobPublic.of(job, store.runs_of(job.id), names, artifacts) for job in store.list_jobs(limit)
    ]


def job(store: Store, job_id: str) -> JobPublic:
    found = store.get_job(job_id)
    public = JobPublic.of(found, store.runs_of(found.id), _device_names(store), store.artifacts())
    return public.model_copy(update={"waiting": store.waiting(found.id)})


def results(
    store: Store,
    *,
    job_id: str | None = None,
    device_id: str | None = None,
    timings: bool = False,
) -> list[ResultPublic]:
    names, artifacts = _device_names(store), store.artifacts()
    return [
        ResultPublic.of(
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
