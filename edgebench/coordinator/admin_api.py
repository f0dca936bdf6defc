"""Admin HTTP calls (tokens, artifact uploads, jobs): each needs the admin token as
`Authorization: Bearer TOKEN`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from edgebench.coordinator.artifacts import ArtifactError, ArtifactFiles, check_sha256
from edgebench.coordinator.jobspec import JobCreate, JobSpecError, new_job, plan_runs
from edgebench.coordinator.store import Store, StoreError
from edgebench.coordinator.tables import Artifact, utcnow
from edgebench.dashboard import queries
from edgebench.dashboard.api import StoreDep
from edgebench.dashboard.schemas import JobCancelled, JobPublic

# Declares the scheme in the OpenAPI document (Swagger UI's "Authorize"); the check is ours.
bearer = HTTPBearer(auto_error=False, description="The admin token (EDGEBENCH_TOKEN).")


def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None,
) -> None:
    store: Store = request.app.state.store
    token = credentials.credentials.strip() if credentials else ""
    if not token or not store.is_admin(token):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "admin token missing or wrong (set EDGEBENCH_TOKEN or pass --token)",
            headers={"WWW-Authenticate": "Bearer"},
        )


router = APIRouter(prefix="/api/v1", tags=["admin"], dependencies=[Depends(require_admin)])


class TokenCreate(BaseModel):
    contributor: bool = False
    expires_in_seconds: int | None = Field(default=None, ge=60, le=365 * 24 * 3600)


class TokenCreated(BaseModel):
    token: str


class ArtifactPublic(BaseModel):
    sha256: str
    filename: str
    size_bytes: int
    format: str


def _dispatch_hook(request: Request) -> Callable[[], None]:
    hook: Callable[[], None] = request.app.state.on_jobs_changed
    return hook


@router.post("/tokens", status_code=status.HTTP_201_CREATED)
def create_token(body: TokenCreate, store: StoreDep) -> TokenCreated:
    """A one-time enrollment token for one agent."""
    expires = (
        utcnow() + timedelta(seconds=body.expires_in_seconds) if body.expires_in_seconds else None
    )
    return TokenCreated(
        token=store.create_enrollment_token(contributor=body.contributor, expires_at=expires)
    )


@router.get("/artifacts/{sha256}")
def get_artifact(sha256: str, store: StoreDep) -> ArtifactPublic:
    artifact = store.get_artifact(sha256)
    if artifact is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no artifact {sha256}")
    return ArtifactPublic(**artifact.model_dump(exclude={"created_at"}))


@router.put("/artifacts/{sha256}", status_code=status.HTTP_201_CREATED)
async def upload_artifact(
    sha256: str,
    request: Request,
    store: StoreDep,
    filename: Annotated[str, Query(min_length=1, max_length=255)],
    format: Annotated[str, Query(pattern=r"^(gguf|onnx|hf)$")] = "gguf",
) -> ArtifactPublic:
    """Streams a model in (a GGUF file, or a model folder as a tar); it is kept only if
    it is what `format` says and its id matches."""
    files: ArtifactFiles = request.app.state.artifacts
    try:
        check_sha256(sha256)
        existing = await asyncio.to_thread(store.get_artifact, sha256)
        if existing is not None and files.exists(sha256):
            return ArtifactPublic(**existing.model_dump(exclude={"created_at"}))
        limit = request.app.state.max_artifact_bytes
        size = await files.receive(sha256, request.stream(), limit, format)
    except ArtifactError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    artifact: Artifact = await asyncio.to_thread(
        store.add_artifact,
        sha256=sha256,
        filename=filename.rsplit("/", 1)[-1],
        size_bytes=size,
        fmt=format,
    )
    return ArtifactPublic(**artifact.model_dump(exclude={"created_at"}))


@router.post("/jobs", status_code=status.HTTP_201_CREATED)
def create_job(body: JobCreate, request: Request, store: StoreDep) -> JobPublic:
    """Queues a job; its runs go to matching agents as soon as one is idle."""
    formats = {}
    for sha in body.models:
        artifact = store.get_artifact(sha)
        if artifact is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, f"model {sha} was never uploaded"
            )
        formats[sha] = artifact.format
    try:
        planned = plan_runs(body, formats)
        created, _, warnings = store.create_job(new_job(body), planned, body.selector)
    except (JobSpecError, StoreError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    _dispatch_hook(request)()
    return queries.job(store, created.id).model_copy(update={"warnings": warnings})


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, request: Request, store: StoreDep) -> JobCancelled:
    """Cancels the runs of a job that have not finished; finished runs keep their results."""
    cancelled = store.cancel_job(job_id)
    request.app.state.on_runs_cancelled(cancelled.held)
    return JobCancelled(cancelled_runs=cancelled.runs, job=queries.job(store, cancelled.job_id))
