"""The read-only JSON API under /api/v1."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from edgebench.dashboard import queries
from edgebench.dashboard.deps import StoreDep
from edgebench.dashboard.models import DevicePublic, JobPublic, ResultPublic

router = APIRouter(prefix="/api/v1", tags=["read"])


@router.get("/devices")
def list_devices(store: StoreDep) -> list[DevicePublic]:
    """Every enrolled device, with whether it is online."""
    return queries.devices(store)


@router.get("/devices/{key}")
def get_device(key: str, store: StoreDep) -> DevicePublic:
    """One device, by name, id or a unique id prefix."""
    return queries.device(store, key)


@router.get("/jobs")
def list_jobs(
    store: StoreDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[JobPublic]:
    """The newest jobs first, each with its runs."""
    return queries.jobs(store, limit)


@router.get("/jobs/{job_id}")
def get_job(job_id: str, store: StoreDep) -> JobPublic:
    """One job by id or a unique id prefix, with its runs and why queued runs wait."""
    return queries.job(store, job_id)


@router.get("/results")
def list_results(
    store: StoreDep,
    job_id: str | None = None,
    device_id: str | None = None,
    timings: bool = False,
) -> list[ResultPublic]:
    """Results, optionally of one job (id or prefix) or one device (name, id or prefix);
    `timings=true` adds the raw per-token timestamps of every repetition."""
    return queries.results(store, job_id=job_id, device_id=device_id, timings=timings)
