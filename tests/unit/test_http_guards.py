"""What every HTTP response carries and what the app refuses before reading a body."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edgebench.coordinator.store import Store
from edgebench.coordinator.throttle import FailureBudget, peer_address
from edgebench.dashboard.app import create_app
from edgebench.dashboard.deps import ApiContext
from tests.conftest import ADMIN_TOKEN


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'coordinator.db'}")
    store.ensure_admin_token(ADMIN_TOKEN)
    return store


def _call(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """One request straight into the ASGI app, counting how often it reads the body."""
    reads, sent = [], []

    async def receive() -> dict[str, Any]:
        reads.append(1)
        return {"type": "http.request", "body": b"{" * 1_000_000, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "query_string": b"", "headers": headers, "app": app, "http_version": "1.1",
             "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1)}  # fmt: skip
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return {"status": start["status"], "reads": len(reads)}


@pytest.mark.parametrize(
    "headers",
    [[], [(b"authorization", b"Bearer wrong")], [(b"authorization", b"Basic " + b"x" * 20)]],
)
def test_admin_writes_without_the_token_are_refused_before_the_body_is_read(
    store: Store, headers: list[tuple[bytes, bytes]]
) -> None:
    app = create_app(ApiContext(store))
    content = [(b"content-type", b"application/json"), *headers]
    for method, path in (("POST", "/api/v1/jobs"), ("POST", "/api/v1/tokens"),
                         ("PUT", "/api/v1/artifacts/" + "a" * 64)):  # fmt: skip
        answer = _call(app, method, path, content)
        assert answer == {"status": 401, "reads": 0}, (method, path)


def test_the_admin_token_lets_the_body_be_read(store: Store) -> None:
    app = create_app(ApiContext(store))
    auth = [(b"content-type", b"application/json"),
            (b"authorization", f"Bearer {ADMIN_TOKEN}".encode())]  # fmt: skip
    answer = _call(app, "POST", "/api/v1/jobs", auth)
    assert answer["status"] == 422 and answer["reads"] >= 1  # read, and not JSON


def test_every_response_carries_the_security_headers(store: Store) -> None:
    client = TestClient(create_app(ApiContext(store)))
    for path in ("/", "/leaderboard", "/api/v1/results", "/results/nope", "/static/app.js"):
        response = client.get(path)
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["x-frame-options"] == "DENY", path
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "unsafe-inline" not in policy, path
    docs = client.get("/docs").headers["content-security-policy"]
    assert "script-src 'self' 'unsafe-inline'" in docs  # Swagger UI starts inline
    refused = client.post("/api/v1/jobs", json={})
    assert refused.status_code == 401 and refused.headers["x-frame-options"] == "DENY"


def test_a_new_sqlite_store_is_private_to_its_owner(store: Store, tmp_path: Path) -> None:
    for name in ("coordinator.db", "coordinator.db-wal"):
        path = tmp_path / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    assert stat.S_IMODE((tmp_path / "coordinator.db").stat().st_mode) == 0o600


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_failure_budget_refuses_for_the_rest_of_the_minute() -> None:
    clock = Clock()
    budget = FailureBudget(per_window=3, window_seconds=60, clock=clock)
    for _ in range(3):
        assert budget.wait_seconds("10.0.0.5") == 0
        budget.failed("10.0.0.5")
        clock.now += 10
    assert budget.wait_seconds("10.0.0.5") == 30  # the first failure is 30 s from leaving
    assert budget.wait_seconds("10.0.0.6") == 0  # another address is not held up
    clock.now += 30
    assert budget.wait_seconds("10.0.0.5") == 0


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.0.0.5:51234", "10.0.0.5"),
        ("ipv6:[::1]:51234", "::1"),
        ("unix:/tmp/s", "unix:/tmp/s"),
    ],
)
def test_grpc_peers_are_counted_by_address_not_port(peer: str, address: str) -> None:
    assert peer_address(peer) == address


def test_repeated_wrong_admin_tokens_are_refused_with_a_retry_after(store: Store) -> None:
    app = create_app(ApiContext(store))
    clock = Clock()
    app.state.failures = FailureBudget(per_window=3, window_seconds=60, clock=clock)
    client = TestClient(app)
    wrong = {"Authorization": "Bearer guessed"}
    for _ in range(3):
        assert client.post("/api/v1/tokens", json={}, headers=wrong).status_code == 401
    refused = client.post("/api/v1/tokens", json={}, headers=wrong)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "60"
    assert "too many failed attempts" in refused.json()["detail"]
    right = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert client.post("/api/v1/tokens", json={}, headers=right).status_code == 429  # waits too
    clock.now += 61
    assert client.post("/api/v1/tokens", json={}, headers=right).status_code == 201
