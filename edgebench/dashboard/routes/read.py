"""The read-only JSON API under /api/v1: paged lists with a total count, one object per
id, and streamed exports of every row a list's filters match."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from edgebench.dashboard import listing, queries
from edgebench.dashboard.deps import StoreDep
from edgebench.dashboard.models import (
    DevicePublic,
    JobPublic,
    LeaderboardPage,
    LeaderboardQuery,
    Page,
    ResultPublic,
    ResultQuery,
    ResultSummary,
)
from edgebench.report import csv_chunks, json_chunks, jsonl_chunks

router = APIRouter(prefix="/api/v1", tags=["read"])

Offset = Annotated[int, Query(ge=0, le=10_000_000)]
ExportFormat = Literal["csv", "json", "jsonl"]
_MEDIA = {"csv": "text/csv", "json": "application/json", "jsonl": "application/x-ndjson"}
# what an export answers, as the schema says it (a stream, one type per format)
_EXPORTED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the rows, in the format asked for",
        "content": {
            _MEDIA["csv"]: {"schema": {"type": "string"}},
            _MEDIA["jsonl"]: {"schema": {"type": "string"}},  # one JSON object a line
            _MEDIA["json"]: {"schema": {"type": "array", "items": {"type": "object"}}},
        },
    }
}


@router.get("/devices")
def list_devices(
    store: StoreDep, offset: Offset = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 1000
) -> Page[DevicePublic]:
    """Enrolled devices by name: status (offline, idle, busy), the run each holds."""
    return queries.devices(store, offset, limit)


@router.get("/devices/{key}")
def get_device(key: str, store: StoreDep) -> DevicePublic:
    """One device, by name, id or a unique id prefix."""
    return queries.device(store, key)


@router.get("/jobs")
def list_jobs(
    store: StoreDep, offset: Offset = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 20
) -> Page[JobPublic]:
    """The newest jobs first, each with its runs."""
    return queries.jobs(store, offset, limit)


@router.get("/jobs/{job_id}")
def get_job(job_id: str, store: StoreDep) -> JobPublic:
    """One job by id or a unique id prefix, with its runs and why queued runs wait."""
    return queries.job(store, job_id)


@router.get("/results")
def list_results(store: StoreDep, query: Annotated[ResultQuery, Query()]) -> Page[ResultSummary]:
    """Results matching the filters, a page at a time, as summaries (the stable fields;
    `GET /results/{id}` has the environment, sensors and raw timestamps)."""
    return listing.results_page(store, query)


@router.get("/results/export", response_class=StreamingResponse, responses=_EXPORTED)
def export_results(
    store: StoreDep,
    query: Annotated[ResultQuery, Query()],
    format: ExportFormat = "csv",
    detail: bool = False,
) -> StreamingResponse:
    """Every result the filters match (paging ignored), streamed; `detail` (json and
    jsonl) adds provenance, sensors and the raw per-token timestamps."""
    rows = listing.results_stream(store, query, detail=detail and format != "csv")
    return _download(rows, format, "results")


@router.get("/results/{key}")
def get_result(key: str, store: StoreDep, timings: bool = True) -> ResultPublic:
    """One result by id or a unique id prefix, with everything it carries."""
    return queries.result_public(store, key, timings=timings)


@router.get("/leaderboard")
def leaderboard(store: StoreDep, query: Annotated[LeaderboardQuery, Query()]) -> LeaderboardPage:
    """One row per model x variant x backend x device x test x threads x engine
    settings in force, shown by its newest clean result (or its best). Without a test
    filter the most common test is shown; `test=all` shows every test."""
    return listing.leaderboard_page(store, query)[0]


@router.get("/leaderboard/export", response_class=StreamingResponse, responses=_EXPORTED)
def export_leaderboard(
    store: StoreDep, query: Annotated[LeaderboardQuery, Query()], format: ExportFormat = "csv"
) -> StreamingResponse:
    """Every leaderboard row the filters match (paging ignored), streamed."""
    return _download(listing.leaderboard_stream(store, query), format, "leaderboard")


def _download(rows: Iterator[dict[str, Any]], fmt: str, name: str) -> StreamingResponse:
    chunks = {"csv": csv_chunks, "json": json_chunks, "jsonl": jsonl_chunks}[fmt](rows)
    return StreamingResponse(
        chunks,
        media_type=_MEDIA[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'},
    )
