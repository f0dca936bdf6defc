"""What routes depend on: the store, the artifact files, the admin check, and the hooks
by which the API tells the rest of the coordinator what changed. The server builds one
`ApiContext` and hands it to `create_app`; routes ask for it by type."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from edgebench.coordinator.artifacts import ArtifactFiles
from edgebench.coordinator.store import Store


def _nothing() -> None:
    return None


def _ignore(held: list[tuple[str, str]]) -> None:
    return None


@dataclass(frozen=True)
class ApiHooks:
    """Called from request threads; each must be safe to call from any thread."""

    jobs_changed: Callable[[], None] = _nothing  # new runs are queued
    runs_cancelled: Callable[[list[tuple[str, str]]], None] = _ignore  # (run id, agent id)


@dataclass(frozen=True)
class ApiContext:
    store: Store
    artifacts: ArtifactFiles | None = None  # None: uploads are refused (a read-only app)
    max_artifact_bytes: int = 64 * 1024**3
    hooks: ApiHooks = ApiHooks()
    # sha256 of the TLS authority agents pin; new enrollment tokens carry it
    authority_fingerprint: str | None = None
    # reads (every GET) need the admin token or a viewer token: bearer, or the sign-in
    # cookie /login sets
    reads_need_token: bool = False


def get_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


def get_store(request: Request) -> Store:
    return get_context(request).store


ContextDep = Annotated[ApiContext, Depends(get_context)]
StoreDep = Annotated[Store, Depends(get_store)]

# Declares the scheme in the OpenAPI document (Swagger UI's "Authorize"); the check is ours.
bearer = HTTPBearer(auto_error=False, description="The admin token (EDGEBENCH_TOKEN).")


NOT_ADMIN = "admin token missing or wrong (set EDGEBENCH_TOKEN or pass --token)"


def require_admin(
    store: StoreDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None,
) -> None:
    token = credentials.credentials.strip() if credentials else ""
    if not token or not store.is_admin(token):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, NOT_ADMIN, headers={"WWW-Authenticate": "Bearer"}
        )
