"""Assembles the FastAPI application that the coordinator serves."""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from edgebench import __version__
from edgebench.coordinator.store import NotFound
from edgebench.dashboard import api, pages


def create_app() -> FastAPI:
    """The read-only dashboard; the coordinator adds its admin routes and state."""
    app = FastAPI(title="edgebench", version=__version__, docs_url="/docs")
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": str(exc)}, status_code=404)
        return HTMLResponse(f"<h1>Not found</h1><p>{html.escape(str(exc))}</p>", status_code=404)

    return app
