"""The CLI's client for the coordinator's HTTP API."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from edgebench import paths
from edgebench.errors import EdgebenchError
from edgebench.modelfiles import pack_folder, tree_sha256

DEFAULT_URL = "http://127.0.0.1:8080"
UPLOAD_CHUNK = 1 << 20


class ClientError(EdgebenchError):
    pass


def resolve_url(url: str | None) -> str:
    return (url or os.environ.get("EDGEBENCH_URL") or DEFAULT_URL).rstrip("/")


def resolve_token(token: str | None) -> str | None:
    """--token, then EDGEBENCH_TOKEN, then the token a local coordinator wrote on first start."""
    if token:
        return token
    if os.environ.get("EDGEBENCH_TOKEN"):
        return os.environ["EDGEBENCH_TOKEN"]
    saved = paths.admin_token_file()
    return saved.read_text().strip() if saved.is_file() else None


class CoordinatorClient:
    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        self.url = resolve_url(url)
        self.token = resolve_token(token)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=30.0)

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError:
            raise ClientError(f"coordinator not reachable at {self.url}") from None
        if response.status_code == 401:
            raise ClientError("admin token missing or wrong: set EDGEBENCH_TOKEN or pass --token")
        if response.status_code >= 400:
            raise ClientError(_detail(response))
        return response.json()

    # ---- reads -------------------------------------------------------------------

    def devices(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/api/v1/devices")
        return result

    def device(self, key: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/api/v1/devices/{quote(key, safe='')}")
        return result

    def jobs(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/api/v1/jobs")
        return result

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/api/v1/jobs/{quote(job_id, safe='')}")
        return result

    def results(
        self, job_id: str | None = None, device: str | None = None, timings: bool = False
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"timings": timings}
        if job_id:
            params["job_id"] = job_id
        if device:
            params["device_id"] = device
        result: list[dict[str, Any]] = self._request("GET", "/api/v1/results", params=params)
        return result

    # ---- admin -------------------------------------------------------------------

    def create_token(self, *, contributor: bool, expires_in_seconds: int | None) -> str:
        body = {"contributor": contributor, "expires_in_seconds": expires_in_seconds}
        return str(self._request("POST", "/api/v1/tokens", json=body)["token"])

    def submit_job(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", "/api/v1/jobs", json=body)
        return result

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "POST", f"/api/v1/jobs/{quote(job_id, safe='')}/cancel"
        )
        return result

    def upload_model(
        self, path: Path, fmt: str, on_progress: Callable[[int, int], None] | None = None
    ) -> dict[str, Any]:
        """Uploads a model unless the coordinator already has it. A folder travels as a
        deterministic tar; its id is the hash of its files (the same id `bench` reports)."""
        sha256 = tree_sha256(path)
        try:
            existing: dict[str, Any] = self._request("GET", f"/api/v1/artifacts/{sha256}")
            return existing
        except ClientError as exc:
            if "no artifact" not in str(exc):
                raise
        with tempfile.TemporaryDirectory() as tmp:
            payload = path
            if path.is_dir():
                payload = Path(tmp) / "model.tar"
                pack_folder(path, payload)
            uploaded: dict[str, Any] = self._request(
                "PUT",
                f"/api/v1/artifacts/{sha256}",
                params={"filename": path.name, "format": fmt},
                content=_chunks(payload, on_progress),
                timeout=None,
            )
        return uploaded


def _chunks(path: Path, on_progress: Callable[[int, int], None] | None) -> Iterator[bytes]:
    total, sent = path.stat().st_size, 0
    with path.open("rb") as handle:
        while block := handle.read(UPLOAD_CHUNK):
            sent += len(block)
            if on_progress:
                on_progress(sent, total)
            yield block


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    if isinstance(detail, list):  # pydantic validation errors
        parts = []
        for item in detail:
            where = ".".join(str(p) for p in item.get("loc", ())[1:])
            parts.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
        return "invalid request: " + "; ".join(parts)
    return str(detail)
