"""The HTTP application: the JSON API (open reads, admin calls), the pages, static files
and the API's docs. The coordinator's server builds the `ApiContext` and serves this."""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgebench import __version__
from edgebench.coordinator.store import Ambiguous, NotFound
from edgebench.coordinator.throttle import FailureBudget
from edgebench.dashboard import metrics, pages, readgate
from edgebench.dashboard.deps import NOT_ADMIN, ApiContext
from edgebench.dashboard.readgate import ReadGate
from edgebench.dashboard.routes import admin, downloads, read

STATIC = Path(__file__).parent / "static"
SWAGGER_UI_VERSION = "5.35.0"  # static/swagger-ui/README.md says where it comes from


def create_app(context: ApiContext) -> FastAPI:
    app = FastAPI(title="edgebench", version=__version__, docs_url=None, redoc_url=None)
    app.add_middleware(ServerTiming)
    app.add_middleware(AdminBeforeBody)
    app.add_middleware(ReadGate)
    app.add_middleware(SecurityHeaders)
    app.state.context = context
    app.state.failures = FailureBudget()  # failed admin tokens per address (throttle.py)
    app.include_router(read.router)
    app.include_router(admin.router)
    app.include_router(pages.router)
    app.include_router(readgate.router)
    app.include_router(metrics.router)
    app.include_router(downloads.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        """Swagger UI from the package's own copy: the page works without internet."""
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="edgebench API",
            swagger_js_url=f"/static/swagger-ui/swagger-ui-bundle.js?v={SWAGGER_UI_VERSION}",
            swagger_css_url=f"/static/swagger-ui/swagger-ui.css?v={SWAGGER_UI_VERSION}",
            swagger_favicon_url="/static/swagger-ui/favicon-32x32.png",
        )

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        return _error(request, exc, 404, "Not found")

    @app.exception_handler(RequestValidationError)
    async def bad_query(request: Request, exc: RequestValidationError) -> Response:
        """422 with what was wrong: JSON for the API (FastAPI's shape), a page for pages."""
        if request.url.path.startswith("/api/"):
            return await request_validation_exception_handler(request, exc)
        problems = "; ".join(_problem(e) for e in exc.errors())
        return _error(request, ValueError(problems), 422, "Bad address")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith("/api/") or exc.status_code == 401:
            return await http_exception_handler(request, exc)
        return _error(request, ValueError(str(exc.detail)), exc.status_code, "Cannot show this")

    @app.exception_handler(Ambiguous)
    async def ambiguous(request: Request, exc: Ambiguous) -> Response:
        return _error(request, exc, 400, "Ambiguous id")

    return app


class ServerTiming:
    """Says how long the server took to start answering, in the standard Server-Timing
    header (browsers' developer tools show it; benchmarks/dashboard.py reads it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                took = (time.perf_counter() - started) * 1000
                headers = [
                    *message.get("headers", []),
                    (b"server-timing", f"app;dur={took:.2f}".encode()),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed)


# Pages run only the package's own script and style; Swagger UI (/docs) starts itself
# with an inline script.
_CSP = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'")  # fmt: skip
_DOCS_CSP = _CSP + "; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'"
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """CSP, nosniff, frame and referrer headers on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = _DOCS_CSP if scope["path"] == "/docs" else _CSP

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *_SECURITY_HEADERS,
                           (b"content-security-policy", policy.encode())]  # fmt: skip
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


class AdminBeforeBody:
    """Admin calls (every API call that writes) are refused before their body is read:
    FastAPI parses a JSON body before it runs a route's dependencies, so an
    unauthenticated 100 MB POST was read and parsed before its token was checked. Each
    one, allowed or refused, is written to the audit log with its status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        writes = scope["type"] == "http" and scope["method"] not in ("GET", "HEAD", "OPTIONS")
        if not (writes and scope["path"].startswith("/api/")):
            await self.app(scope, receive, send)
            return
        budget: FailureBudget = scope["app"].state.failures
        address = (scope.get("client") or ("unknown", 0))[0]
        wait = budget.wait_seconds(address)
        if wait:
            refusal = JSONResponse(
                {"detail": f"too many failed attempts from {address}: try again in {wait} s"},
                status_code=429,
                headers={"Retry-After": str(wait)},
            )
        elif not await _is_admin(scope):
            budget.failed(address)
            refusal = JSONResponse(
                {"detail": NOT_ADMIN}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
            await _audit(scope, "unauthenticated", 401)
        else:
            answered: list[int] = [500]

            async def noting_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    answered[0] = message["status"]
                await send(message)

            try:
                await self.app(scope, receive, noting_status)
            finally:
                await _audit(scope, "admin", answered[0])
            return
        await refusal(scope, receive, send)


async def _audit(scope: Scope, actor: str, status: int) -> None:
    store = scope["app"].state.context.store
    action = f"{scope['method']} {scope['path']}"
    address = str((scope.get("client") or ("unknown", 0))[0])
    await run_in_threadpool(
        lambda: store.record_audit(actor=actor, action=action, status=status, address=address)
    )


async def _is_admin(scope: Scope) -> bool:
    header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    store = scope["app"].state.context.store
    return bool(await run_in_threadpool(store.is_admin, token.strip()))


def _problem(error: Any) -> str:
    where = ".".join(str(part) for part in error.get("loc", ())[1:])
    return f"{where}: {error.get('msg')}" if where else str(error.get("msg"))


def _error(request: Request, exc: Exception, status_code: int, title: str) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": str(exc)}, status_code=status_code)
    body = (
        '<!doctype html><meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="stylesheet" href="/static/style.css"><script src="/static/theme.js"></script>'
        f'<main><h1>{title}</h1><p>{html.escape(str(exc))}</p><p><a href="/leaderboard">'
        'Leaderboard</a> · <a href="/">Fleet</a></p></main>'
    )
    return HTMLResponse(body, status_code=status_code)
