"""`/agent/`: the wheel of this coordinator's edgebench, for installing agents that speak
its protocol (`pipx install 'edgebench[agent,llama] @ URL'`). Open to anyone who reaches
the dashboard, as the source it is built from: it holds no secret."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse
from pydantic import BaseModel

from edgebench import __version__
from edgebench.coordinator.wheel import WHEEL_NAME, AgentWheel, NoWheel, Wheel

router = APIRouter(prefix="/agent", tags=["agent install"])
_WHEEL = AgentWheel()


class AgentDownload(BaseModel):
    version: str
    wheel: str  # the file name, under /agent/
    sha256: str
    install: str  # the command, with this coordinator's URL to fill in


def _wheel() -> Wheel:
    try:
        return _WHEEL.get()
    except NoWheel as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


@router.get("/")
def agent_download() -> AgentDownload:
    """Which wheel this coordinator serves and how to install it."""
    found = _wheel()
    install = f"pipx install 'edgebench[agent,llama] @ URL/agent/{WHEEL_NAME}'"
    return AgentDownload(version=__version__, wheel=WHEEL_NAME, sha256=found.sha256,
                         install=install)  # fmt: skip


@router.get("/{name}", response_class=FileResponse)
def agent_wheel(name: str) -> FileResponse:
    """The wheel itself."""
    if name != WHEEL_NAME:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"this coordinator serves {WHEEL_NAME}")
    return FileResponse(_wheel().path, media_type="application/octet-stream", filename=name)
