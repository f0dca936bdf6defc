"""Admin calls under /api/v1 (tokens, artifact uploads, jobs): each needs the admin token
as `Authorization: Bearer TOKEN`."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status

from edgebench.coordinator.artifacts import ArtifactError, check_sha256
from edgebench.coordinator.jobspec import JobSpecError, new_job, plan_runs
from edgebench.coordinator.store import StoreError
from edgebench.coordinator.tables import utcnow
from edgebench.dashboard import queries
from edgebench.dashboard.deps import ContextDep, StoreDep, require_admin
from edgebench.dashboard.models import (
    ArtifactPublic,
    AuditEntryPublic,
    DevicePublic,
    DeviceRemoved,
    JobCancelled,
    JobCreate,
    JobPublic,
    JobRetried,
    Page,
    ResultDeleted,
    TokenCreate,
    TokenCreated,
    TokenPublic,
)
from edgebench.engines import MODEL_FORMATS
from edgebench.modelparams import parameter_count
from edgebench.tls import token_with_fingerprint

router = APIRouter(prefix="/api/v1", tags=["admin"], dependencies=[Depends(require_admin)])
_FORMAT = f"^({'|'.join(MODEL_FORMATS)})$"


def _unprocessable(reason: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, reason)


@router.post("/tokens", status_code=status.HTTP_201_CREATED)
def create_token(body: TokenCreate, context: ContextDep) -> TokenCreated:
    """A one-time enrollment token for one new agent, or (`device`) one that re-enrolls
    that device: an enrolled device's name cannot be taken by any other token. Behind its
    last '.' it carries the fingerprint of the TLS authority the agent pins."""
    store = context.store
    expires = utcnow() + timedelta(seconds=body.expires_in_seconds)
    try:
        token = store.create_enrollment_token(
            contributor=body.contributor,
            expires_at=expires,
            device_name=body.device,
            uses=body.uses,
            viewer=body.viewer,
            owner=body.owner,
        )
    except StoreError as exc:
        raise _unprocessable(str(exc)) from exc
    if body.viewer:  # for the HTTP side: no agent pins anything with it
        return TokenCreated(token=token)
    return TokenCreated(token=token_with_fingerprint(token, context.authority_fingerprint))


@router.post("/devices/{key}/revoke")
def revoke_device(key: str, store: StoreDep) -> DevicePublic:
    """Refuses the device's agents from now on: their live sessions end within a
    heartbeat, the runs they hold go back to the queue. A revoked device can come back
    only by enrolling again with a token made for it (`token create --device NAME`)."""
    return queries.device_public(store.revoke_device(key))


@router.delete("/devices/{key}")
def remove_device(key: str, store: StoreDep) -> DeviceRemoved:
    """Deletes a revoked device for good, with its agents and results; queued runs
    pinned to it are cancelled. Refused until it was revoked (and its sessions ended)."""
    try:
        removed = store.remove_device(key)
    except StoreError as exc:
        raise _unprocessable(str(exc)) from exc
    return DeviceRemoved(
        name=removed.name, results_deleted=removed.results, runs_cancelled=removed.cancelled
    )


@router.post("/devices/{key}/accept")
def accept_hardware(key: str, store: StoreDep) -> DevicePublic:
    """The device's hardware as it last reported it becomes its accepted hardware: it
    leaves review and takes work again."""
    return queries.device_public(store.accept_hardware(key))


@router.post("/devices/{key}/resume")
def resume_device(key: str, store: StoreDep) -> DevicePublic:
    """A drained, in-maintenance, unhealthy or suspended device takes work again, with
    clean failure and check histories."""
    return queries.device_public(store.resume_device(key))


@router.post("/devices/{key}/approve")
def approve_device(key: str, store: StoreDep) -> DevicePublic:
    """A pending device (`serve --require-approval`) takes work from now on."""
    try:
        return queries.device_public(store.approve_device(key))
    except StoreError as exc:
        raise _unprocessable(str(exc)) from exc


@router.post("/devices/{key}/reject")
def reject_device(key: str, store: StoreDep) -> DevicePublic:
    """A device is refused for good (as revoked), and shown as rejected."""
    return queries.device_public(store.reject_device(key))


Reason = Annotated[str, Query(max_length=300, description="why, for the device's note")]


@router.post("/devices/{key}/drain")
def drain_device(key: str, store: StoreDep, request: Request, reason: Reason = "") -> DevicePublic:
    """It finishes the run it holds and takes no more, until `resume`."""
    return queries.device_public(store.set_operator_state(key, "drained", _note(request, reason)))


@router.post("/devices/{key}/maintenance")
def maintain_device(
    key: str, store: StoreDep, request: Request, reason: Reason = ""
) -> DevicePublic:
    """It takes no work, and the run it holds goes back to the queue now, until `resume`."""
    note = _note(request, reason)
    return queries.device_public(store.set_operator_state(key, "maintenance", note))


def _note(request: Request, reason: str) -> str:
    """Who set an operator state, when, from where and why (the audit log has it too)."""
    client = request.client.host if request.client else "?"
    when = utcnow().strftime("%Y-%m-%d %H:%M UTC")
    return f"by admin from {client} at {when}" + (f": {reason}" if reason else "")


@router.get("/tokens")
def list_tokens(store: StoreDep) -> list[TokenPublic]:
    """Every enrollment token and its state, newest first."""
    return [queries.token(row) for row in store.enrollment_tokens()]


@router.delete("/results/{key}")
def delete_result(key: str, store: StoreDep) -> ResultDeleted:
    """Deletes one result (by id or unique prefix) and its payload; its leaderboard group
    is counted again from the results it still has."""
    return ResultDeleted(id=store.delete_result(key).id)


@router.get("/audit")
def audit_log(
    store: StoreDep,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Page[AuditEntryPublic]:
    """Every admin action, allowed or refused, newest first: who, what, when, from where."""
    rows, total = store.audit_entries(offset, limit)
    items = [AuditEntryPublic.model_validate(row, from_attributes=True) for row in rows]
    return Page[AuditEntryPublic](items=items, total=total, offset=offset, limit=limit)


@router.post("/tokens/{token_id}/revoke")
def revoke_token(token_id: str, store: StoreDep) -> TokenPublic:
    """Revokes an enrollment token (by id or unique id prefix): it enrolls nothing more;
    agents it enrolled keep their credentials."""
    return queries.token(store.revoke_enrollment_token(token_id))


@router.get("/artifacts/{sha256}")
def get_artifact(sha256: str, store: StoreDep) -> ArtifactPublic:
    artifact = store.get_artifact(sha256)
    if artifact is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no artifact {sha256}")
    return queries.artifact_public(artifact)


@router.put("/artifacts/{sha256}", status_code=status.HTTP_201_CREATED)
async def upload_artifact(
    sha256: str,
    request: Request,
    context: ContextDep,
    filename: Annotated[str, Query(min_length=1, max_length=255)],
    format: Annotated[str, Query(pattern=_FORMAT)] = "gguf",
) -> ArtifactPublic:
    """Streams a model in (a GGUF file, or a model folder as a tar); it is kept only if
    it is what `format` says and its id matches."""
    store, files = context.store, context.artifacts
    if files is None:
        raise _unprocessable("this server takes no uploads")
    try:
        check_sha256(sha256)
        existing = await asyncio.to_thread(store.get_artifact, sha256)
        if existing is not None and files.exists(sha256):
            return queries.artifact_public(existing)
        size = await files.receive(sha256, request.stream(), context.max_artifact_bytes, format)
    except ArtifactError as exc:
        raise _unprocessable(str(exc)) from exc
    parameters = await asyncio.to_thread(parameter_count, files.path_for(sha256), format)
    artifact = await asyncio.to_thread(
        store.add_artifact,
        sha256=sha256,
        filename=filename.rsplit("/", 1)[-1],
        size_bytes=size,
        fmt=format,
        parameters=parameters,
    )
    return queries.artifact_public(artifact)


@router.post("/jobs", status_code=status.HTTP_201_CREATED)
def create_job(body: JobCreate, context: ContextDep) -> JobPublic:
    """Queues a job; its runs go to matching agents as soon as one is idle. `warnings`
    says what the submitter should know (no enrolled device matches now)."""
    store = context.store
    formats = {}
    for sha in body.models:
        artifact = store.get_artifact(sha)
        if artifact is None:
            raise _unprocessable(f"model {sha} was never uploaded")
        formats[sha] = artifact.format
    try:
        planned = plan_runs(body, formats)
        created, _, warnings = store.create_job(new_job(body), planned, body.selector)
    except (JobSpecError, StoreError) as exc:
        raise _unprocessable(str(exc)) from exc
    context.hooks.jobs_changed()
    created_job = queries.job(store, created.id, why_waiting=False)
    return created_job.model_copy(update={"warnings": warnings})


@router.post("/jobs/{job_id}/retry")
def retry_job(
    job_id: str,
    context: ContextDep,
    run: Annotated[str | None, Query(max_length=64, description="only this run")] = None,
) -> JobRetried:
    """Queues the job's failed and dead runs again (or one of them) with a fresh attempt
    count; automatic retries are the coordinator's own (a device failure is retried once
    elsewhere)."""
    job, count = context.store.retry_job(job_id, run)
    if count:
        context.hooks.jobs_changed()
    return JobRetried(retried_runs=count, job=queries.job(context.store, job))


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, context: ContextDep) -> JobCancelled:
    """Cancels the runs of a job that have not finished; finished runs keep their results."""
    cancelled = context.store.cancel_job(job_id)
    context.hooks.runs_cancelled(cancelled.held)
    return JobCancelled(
        cancelled_runs=cancelled.runs, job=queries.job(context.store, cancelled.job_id)
    )
