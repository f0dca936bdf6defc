"""Server-rendered HTML pages: fleet, one page per device, jobs, one page per job."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from edgebench.dashboard import queries
from edgebench.dashboard.deps import StoreDep

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
router = APIRouter(include_in_schema=False)


def _fmt(value: object, digits: int = 1) -> str:
    return f"{value:,.{digits}f}" if isinstance(value, float) else str(value)


templates.env.filters["num"] = _fmt


@router.get("/", response_class=HTMLResponse)
def fleet(request: Request, store: StoreDep) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        "fleet.html",
        {"devices": queries.devices(store), "jobs": queries.jobs(store, limit=10)},
    )


@router.get("/devices/{key}", response_class=HTMLResponse)
def device_page(key: str, request: Request, store: StoreDep) -> HTMLResponse:
    device = queries.device(store, key)
    results = queries.results(store, device_id=device.id)
    return templates.TemplateResponse(
        request, "device.html", {"device": device, "results": results}
    )


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, store: StoreDep) -> HTMLResponse:
    return templates.TemplateResponse(request, "jobs.html", {"jobs": queries.jobs(store)})


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: str, request: Request, store: StoreDep) -> HTMLResponse:
    job = queries.job(store, job_id)
    results = queries.results(store, job_id=job.id)
    return templates.TemplateResponse(request, "job.html", {"job": job, "results": results})
