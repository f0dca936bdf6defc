"""Reads that need a token (`--private` here; the default beyond loopback): the API and
the pages refuse strangers, viewer tokens read and never write or enroll, the sign-in form
sets an HttpOnly cookie and redirects only within the site, and revocation and expiry end
access at once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select

from edgebench.coordinator.store import Store
from edgebench.coordinator.tables import EnrollmentToken, utcnow
from tests.conftest import ADMIN_TOKEN, Coordinator, run_cli, start_coordinator, stop

NEEDS = "reads need a token"


@pytest.fixture
def private(tmp_path: Path) -> Iterator[Coordinator]:
    coord = start_coordinator(tmp_path / "coordinator", "--private")
    yield coord
    stop(coord.process)


def _viewer(coord: Coordinator, *extra: str) -> str:
    made = coord.cli("coordinator", "token", "create", "--viewer", *extra)
    assert made.returncode == 0, made.stderr
    assert "reads the dashboard and API; enrolls nothing" in made.stderr
    token = made.stdout.strip()
    assert token.startswith("ebv_") and "." not in token  # no CA fingerprint: not for agents
    return token


def _get(coord: Coordinator, path: str, token: str | None = None, **kw: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(coord.http + path, headers=headers, timeout=10, **kw)  # type: ignore[arg-type]


def test_strangers_are_refused_and_tokens_read(private: Coordinator, tmp_path: Path) -> None:
    assert (
        NEEDS.replace("a token", "a viewer token") in (private.home / "coordinator.log").read_text()
    )
    refused = _get(private, "/api/v1/devices")
    assert refused.status_code == 401 and NEEDS in refused.json()["detail"]
    assert _get(private, "/openapi.json").status_code == 401
    page = _get(private, "/leaderboard?test=all")
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fleaderboard%3Ftest%3Dall"
    assert _get(private, "/static/style.css").status_code == 200
    assert "Viewer token" in _get(private, "/login").text
    viewer = _viewer(private)
    for token in (ADMIN_TOKEN, viewer):
        assert _get(private, "/api/v1/devices", token).status_code == 200
        assert _get(private, "/leaderboard", token).status_code == 200
    enrollment = private.cli("coordinator", "token", "create").stdout.strip()
    assert _get(private, "/api/v1/devices", enrollment.rpartition(".")[0]).status_code == 401
    # a viewer never writes, and never enrolls an agent
    write = httpx.post(private.http + "/api/v1/tokens", json={},
                       headers={"Authorization": f"Bearer {viewer}"}, timeout=10)  # fmt: skip
    assert write.status_code == 401
    enroll = run_cli(tmp_path / "agent", "agent", "enroll", "--coordinator", private.grpc,
                     "--token", f"{viewer}.{private.fingerprint}")  # fmt: skip
    assert enroll.returncode == 1 and "unknown, used up or revoked" in enroll.stderr


def test_the_cli_reads_with_a_viewer_token_and_says_what_is_missing(
    private: Coordinator, tmp_path: Path
) -> None:
    viewer = _viewer(private)
    elsewhere = tmp_path / "laptop"
    elsewhere.mkdir()
    listed = run_cli(elsewhere, "devices", "list", EDGEBENCH_URL=private.http,
                     EDGEBENCH_TOKEN=viewer)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    bare = run_cli(elsewhere, "jobs", "list", EDGEBENCH_URL=private.http)
    lines = bare.stderr.strip().splitlines()
    assert bare.returncode == 1 and len(lines) == 1
    assert NEEDS in lines[0] and "EDGEBENCH_TOKEN" in lines[0]


def test_signing_in_sets_an_httponly_cookie_and_stays_on_the_site(private: Coordinator) -> None:
    viewer = _viewer(private)
    wrong = httpx.post(private.http + "/login", data={"token": "ebv_guess", "next": "/jobs"})
    assert wrong.status_code == 401 and "not a live viewer token" in wrong.text
    signed = httpx.post(private.http + "/login", data={"token": viewer, "next": "/jobs?x=1"})
    assert signed.status_code == 303 and signed.headers["location"] == "/jobs?x=1"
    cookie = signed.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    assert "secure" not in cookie  # plain HTTP here; HTTPS marks it Secure
    with httpx.Client(base_url=private.http, cookies=signed.cookies) as browser:
        assert browser.get("/jobs").status_code == 200
        assert browser.get("/api/v1/jobs").status_code == 200
    for elsewhere in ("//evil.example/x", "https://evil.example", "/\\evil.example"):
        moved = httpx.post(private.http + "/login", data={"token": viewer, "next": elsewhere})
        assert moved.headers["location"] == "/leaderboard", elsewhere
    out = httpx.get(private.http + "/logout")
    assert out.status_code == 303 and 'edgebench_viewer=""' in out.headers["set-cookie"]


def test_revoked_and_expired_viewer_tokens_read_nothing(private: Coordinator) -> None:
    revoked, expired = _viewer(private), _viewer(private, "--expires", "7d")
    assert _get(private, "/api/v1/jobs", revoked).status_code == 200
    listed = json.loads(private.cli("coordinator", "token", "list", "--json").stdout)
    oldest = [t for t in listed if t["viewer"]][-1]  # the list is newest first
    assert private.cli("coordinator", "token", "revoke", oldest["id"][:8]).returncode == 0
    store = Store(f"sqlite:///{private.db_path}")
    try:
        with Session(store.engine) as s:
            rows = s.exec(select(EnrollmentToken).where(EnrollmentToken.viewer)).all()
            live = [r for r in rows if r.revoked_at is None]
            for row in live:
                row.expires_at = utcnow() - timedelta(seconds=1)
                s.add(row)
            s.commit()
    finally:
        store.close()
    for token in (revoked, expired):
        assert _get(private, "/api/v1/jobs", token).status_code == 401
    said = private.cli("coordinator", "token", "list").stdout
    assert "revoked" in said and "expired" in said and "viewer" in said


def test_public_and_private_exclude_each_other(tmp_path: Path) -> None:
    both = run_cli(tmp_path, "coordinator", "serve", "--public", "--private", timeout=30)
    assert both.returncode == 2 and "exclude each other" in both.stderr
