"""The CLI's client for the coordinator's HTTP API."""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, ValidationError

from edgebench import paths
from edgebench.dashboard.models import (
    TOKEN_LIFETIME_SECONDS,
    ArtifactPublic,
    AuditEntryPublic,
    DevicePublic,
    DeviceRemoved,
    JobCancelled,
    JobCreate,
    JobPublic,
    JobRetried,
    ResultDeleted,
    TokenCreate,
    TokenCreated,
    TokenPublic,
)
from edgebench.errors import EdgebenchError
from edgebench.modelfiles import pack_folder, tree_sha256
from edgebench.tls import PUBLIC_AUTHORITY_FILE, is_loopback

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


def verification(url: str, ca: Path | None) -> ssl.SSLContext | bool:
    """How an https:// coordinator is verified: against --ca alone when given, else the
    system's authorities and the local coordinator's own (`coordinator ca`)."""
    if not url.startswith("https://"):
        return True
    if ca is not None:
        try:
            return ssl.create_default_context(cafile=str(ca))
        except (OSError, ssl.SSLError) as exc:
            raise ClientError(f"cannot use --ca {ca}: {exc}") from None
    context = ssl.create_default_context()
    local = paths.tls_dir() / PUBLIC_AUTHORITY_FILE
    if local.is_file():
        with contextlib.suppress(OSError, ssl.SSLError):
            context.load_verify_locations(cafile=str(local))
    return context


def plain_beyond_loopback(url: str) -> bool:
    """True for an http:// URL to another host: the admin token is never sent there."""
    parts = urlsplit(url)
    return parts.scheme == "http" and not is_loopback(parts.hostname or "")


class CoordinatorClient:
    def __init__(
        self, url: str | None = None, token: str | None = None, ca: Path | None = None
    ) -> None:
        self.url = resolve_url(url)
        self.token = resolve_token(token)
        self._withheld = bool(self.token) and plain_beyond_loopback(self.url)
        sent = self.token if self.token and not self._withheld else None
        headers = {"Authorization": f"Bearer {sent}"} if sent else {}
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=30.0, verify=verification(self.url, ca)
        )

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ClientError(_unreachable(self.url, exc)) from None
        if response.status_code == 401 and self._withheld:
            raise ClientError(
                f"the admin token is never sent over plain HTTP to {urlsplit(self.url).hostname}:"
                " use the coordinator's https:// URL (it serves HTTPS beyond loopback)"
            )
        if response.status_code == 401 and method == "GET":  # reads that need a token
            detail = _detail(response)
            hint = "" if "EDGEBENCH_TOKEN" in detail else "; set EDGEBENCH_TOKEN or pass --token"
            raise ClientError(detail + hint)
        if response.status_code == 401:
            raise ClientError("admin token missing or wrong: set EDGEBENCH_TOKEN or pass --token")
        if response.status_code >= 400:
            raise ClientError(_detail(response))
        try:
            return response.json()
        except ValueError:
            raise ClientError(
                f"{self.url} did not answer with JSON: is it a coordinator?"
            ) from None

    # ---- reads -------------------------------------------------------------------

    def devices(self) -> list[DevicePublic]:
        return self._every(DevicePublic, "/api/v1/devices", 1000)

    def _every(self, model: type[Model], path: str, limit: int) -> list[Model]:
        """Every item of a paged list, a page at a time."""
        items: list[Model] = []
        while True:
            page = self._request("GET", path, params={"offset": len(items), "limit": limit})
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise EdgebenchError(f"the coordinator answered {path} with no page of items")
            items += _list(model, page["items"])
            if not page["items"] or len(items) >= int(page.get("total", 0)):
                return items

    def device(self, key: str) -> DevicePublic:
        return _one(DevicePublic, self._request("GET", f"/api/v1/devices/{_part(key)}"))

    def jobs(self, limit: int = 100) -> list[JobPublic]:
        """The newest jobs (one page)."""
        page = self._request("GET", "/api/v1/jobs", params={"limit": limit})
        items = page.get("items") if isinstance(page, dict) else None
        return _list(JobPublic, items)

    def job(self, job_id: str) -> JobPublic:
        return _one(JobPublic, self._request("GET", f"/api/v1/jobs/{_part(job_id)}"))

    def result_rows(
        self, *, job_id: str | None = None, device: str | None = None, detail: bool = False
    ) -> list[dict[str, Any]]:
        """Every matching result as an export row (the server's export, streamed in as
        JSON lines); `detail` adds provenance, sensors and the raw token timings."""
        params: dict[str, Any] = {"format": "jsonl", "detail": detail, "order": "asc"}
        if job_id:
            params["job"] = job_id
        if device:
            params["device"] = device
        rows = []
        try:
            with self._http.stream("GET", "/api/v1/results/export", params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ClientError(_detail(response))
                rows = [_row(line) for line in response.iter_lines() if line.strip()]
        except httpx.TransportError as exc:
            raise ClientError(_unreachable(self.url, exc)) from None
        return rows

    # ---- admin -------------------------------------------------------------------

    def create_token(
        self,
        *,
        contributor: bool,
        expires_in_seconds: int = TOKEN_LIFETIME_SECONDS,
        device: str | None = None,
        uses: int = 1,
        viewer: bool = False,
        owner: str = "",
    ) -> str:
        body = TokenCreate(
            contributor=contributor,
            expires_in_seconds=expires_in_seconds,
            device=device,
            uses=uses,
            viewer=viewer,
            owner=owner,
        )
        created = self._request("POST", "/api/v1/tokens", json=body.model_dump())
        return _one(TokenCreated, created).token

    def delete_result(self, key: str) -> str:
        answer = self._request("DELETE", f"/api/v1/results/{_part(key)}")
        return _one(ResultDeleted, answer).id

    def revoke_device(self, key: str) -> DevicePublic:
        answer = self._request("POST", f"/api/v1/devices/{_part(key)}/revoke")
        return _one(DevicePublic, answer)

    def remove_device(self, key: str) -> DeviceRemoved:
        answer = self._request("DELETE", f"/api/v1/devices/{_part(key)}")
        return _one(DeviceRemoved, answer)

    def accept_hardware(self, key: str) -> DevicePublic:
        answer = self._request("POST", f"/api/v1/devices/{_part(key)}/accept")
        return _one(DevicePublic, answer)

    def device_action(self, key: str, action: str, reason: str = "") -> DevicePublic:
        """approve, reject, drain or maintenance (with a reason for the last two)."""
        params = {"reason": reason} if reason else None
        path = f"/api/v1/devices/{_part(key)}/{action}"
        return _one(DevicePublic, self._request("POST", path, params=params))

    def resume_device(self, key: str) -> DevicePublic:
        answer = self._request("POST", f"/api/v1/devices/{_part(key)}/resume")
        return _one(DevicePublic, answer)

    def audit(self, limit: int) -> list[AuditEntryPublic]:
        """The newest `limit` admin actions."""
        page = self._request("GET", "/api/v1/audit", params={"limit": limit})
        items = page.get("items") if isinstance(page, dict) else None
        return _list(AuditEntryPublic, items)

    def tokens(self) -> list[TokenPublic]:
        return _list(TokenPublic, self._request("GET", "/api/v1/tokens"))

    def revoke_token(self, token_id: str) -> TokenPublic:
        answer = self._request("POST", f"/api/v1/tokens/{_part(token_id)}/revoke")
        return _one(TokenPublic, answer)

    def submit_job(self, job: JobCreate) -> JobPublic:
        body = job.model_dump(mode="json")
        return _one(JobPublic, self._request("POST", "/api/v1/jobs", json=body))

    def retry_job(self, job_id: str, run: str | None = None) -> JobRetried:
        params = {"run": run} if run else None
        answer = self._request("POST", f"/api/v1/jobs/{_part(job_id)}/retry", params=params)
        return _one(JobRetried, answer)

    def cancel_job(self, job_id: str) -> JobCancelled:
        answer = self._request("POST", f"/api/v1/jobs/{_part(job_id)}/cancel")
        return _one(JobCancelled, answer)

    def upload_model(
        self, path: Path, fmt: str, on_progress: Callable[[int, int], None] | None = None
    ) -> ArtifactPublic:
        """Uploads a model unless the coordinator already has it. A folder travels as a
        deterministic tar; its id is the hash of its files (the same id `bench` reports)."""
        sha256 = tree_sha256(path)
        try:
            existing = self._request("GET", f"/api/v1/artifacts/{sha256}")
            return _one(ArtifactPublic, existing)
        except ClientError as exc:
            if "no artifact" not in str(exc):
                raise
        with tempfile.TemporaryDirectory() as tmp:
            payload = path
            if path.is_dir():
                payload = Path(tmp) / "model.tar"
                pack_folder(path, payload)
            uploaded = self._request(
                "PUT",
                f"/api/v1/artifacts/{sha256}",
                params={"filename": path.name, "format": fmt},
                content=_chunks(payload, on_progress),
                timeout=None,
            )
        return _one(ArtifactPublic, uploaded)


Model = TypeVar("Model", bound=BaseModel)


def _one(model: type[Model], data: Any) -> Model:
    """An answer, checked: what a coordinator (or anyone on the path) sends is input."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ClientError(
            f"the coordinator's answer is not a valid {model.__name__}: {exc}"
        ) from None


def _row(line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except ValueError:
        row = None
    if not isinstance(row, dict):
        raise EdgebenchError("the coordinator sent an export line that is not a JSON object")
    return row


def _list(model: type[Model], data: Any) -> list[Model]:
    if not isinstance(data, list):
        raise ClientError("the coordinator answered with something other than a list")
    return [_one(model, item) for item in data]


def _part(text: str) -> str:
    """A value as one path segment (an id or a name typed by a person)."""
    return quote(text, safe="")


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


def _unreachable(url: str, error: httpx.TransportError) -> str:
    if isinstance(error, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(error):
        return (
            f"cannot verify {url}: its certificate is not from a CA this CLI trusts; "
            "get the coordinator's with `edgebench coordinator ca > ca.pem` and pass --ca "
            "ca.pem (or set EDGEBENCH_CA)"
        )
    return f"coordinator not reachable at {url}"
