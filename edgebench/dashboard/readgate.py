"""Reads that need a token (a coordinator beyond loopback without --public, or --private):
every GET needs the admin token or a viewer token, sent as a bearer token (scripts,
Prometheus) or held in the HttpOnly cookie the sign-in form sets (browsers). Writes are
the admin's alone either way (app.AdminBeforeBody)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from edgebench.coordinator.throttle import FailureBudget
from edgebench.dashboard.deps import ApiContext, StoreDep
from edgebench.dashboard.pages import templates  # the pages' environment and base

COOKIE = "edgebench_viewer"
COOKIE_DAYS = 30  # at most; a token that expires sooner ends the sign-in with it
SIGN_IN = "/login"
OPEN_PATHS = (SIGN_IN, "/logout", "/static/", "/agent/")  # /agent/: the agent's wheel
NEEDS_TOKEN = (
    "this coordinator's reads need a token: send a viewer token "
    "(`edgebench coordinator token create --viewer`) as a bearer token, or sign in at /login"
)

router = APIRouter(include_in_schema=False)


class ReadGate:
    """Refuses reads without a token where the context says reads need one: 401 for the
    API, a redirect to the sign-in form for pages. Failed tokens count against the
    address's failure budget like failed admin tokens."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _gated(scope):
            await self.app(scope, receive, send)
            return
        token = _presented(scope)
        budget: FailureBudget = scope["app"].state.failures
        address = _address(scope)
        wait = budget.wait_seconds(address)
        store = scope["app"].state.context.store
        if not wait and token and await run_in_threadpool(store.may_read, token):
            await self.app(scope, receive, send)
            return
        if token and not wait:
            budget.failed(address)
        await _refusal(scope, wait)(scope, receive, send)


def _gated(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
        return False
    context: ApiContext = scope["app"].state.context
    return context.reads_need_token and not scope["path"].startswith(OPEN_PATHS)


def _presented(scope: Scope) -> str:
    headers: dict[bytes, bytes] = dict(scope["headers"])
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return str(token.strip())
    for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return str(value)
    return ""


def _address(scope: Scope) -> str:
    return str((scope.get("client") or ("unknown", 0))[0])


def _refusal(scope: Scope, wait: int) -> Response:
    if wait:
        detail = f"too many failed attempts from {_address(scope)}: try again in {wait} s"
        return JSONResponse({"detail": detail}, 429, headers={"Retry-After": str(wait)})
    path = scope["path"]
    if path.startswith("/api/") or path in ("/openapi.json", "/docs", "/metrics"):
        return JSONResponse({"detail": NEEDS_TOKEN}, 401, headers={"WWW-Authenticate": "Bearer"})
    query = scope.get("query_string", b"").decode("latin-1")
    wanted = path + (f"?{query}" if query else "")
    return RedirectResponse(f"{SIGN_IN}?next={quote(wanted, safe='')}", status_code=303)


def safe_next(wanted: str | None) -> str:
    """Only a path on this site (never `//elsewhere` or a scheme): no open redirect."""
    if not wanted or not wanted.startswith("/") or wanted.startswith(("//", "/\\")):
        return "/leaderboard"
    return wanted


def _form(request: Request, wanted: str, error: str = "", status_code: int = 200) -> Response:
    context = {"next": safe_next(wanted), "error": error}
    return templates.TemplateResponse(request, "login.html", context, status_code=status_code)


@router.get(SIGN_IN, response_class=HTMLResponse)
def sign_in_form(
    request: Request, next: Annotated[str | None, Query(max_length=4000)] = None
) -> Response:
    return _form(request, next or "")


@router.post(SIGN_IN, response_class=HTMLResponse)
def sign_in(
    request: Request,
    store: StoreDep,
    token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    budget: FailureBudget = request.app.state.failures
    address = request.client.host if request.client else "unknown"
    wait = budget.wait_seconds(address)
    if wait:
        return _form(request, next, f"Too many failed attempts: try again in {wait} s.", 429)
    expires = store.viewer_expiry(token.strip()) if token.strip() else None
    if expires is None:
        budget.failed(address)
        return _form(request, next, "That is not a live viewer token.", 401)
    response = RedirectResponse(safe_next(next), status_code=303)
    seconds = (expires - datetime.now(timezone.utc)).total_seconds()
    response.set_cookie(
        COOKIE,
        token.strip(),
        max_age=int(min(seconds, COOKIE_DAYS * 86400)),
        httponly=True,
        samesite="lax",  # sent on a followed link (a shared view), never on a cross-site POST
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.get("/logout")
def sign_out() -> Response:
    response = RedirectResponse(SIGN_IN, status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
