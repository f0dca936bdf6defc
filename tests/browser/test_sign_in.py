"""Signing in with a viewer token in the real Chromium, on a coordinator whose reads need
a token: a shared link lands on the form, the token takes the reader to that view, and
the page's own script cannot read the cookie."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from edgebench.coordinator.store import Store
from tests.conftest import start_coordinator, stop
from tests.storefill import fill

pytestmark = pytest.mark.slow


def test_a_shared_link_signs_in_and_opens_its_view(tmp_path: Path, browser: Any) -> None:
    store = Store(f"sqlite:///{tmp_path / 'coordinator.db'}")
    fill(store, devices=2, results=12, samples=4)
    store.close()
    coord = start_coordinator(tmp_path, "--private")
    try:
        made = coord.cli("coordinator", "token", "create", "--viewer")
        assert made.returncode == 0, made.stderr
        context = browser.new_context()
        page = context.new_page()
        page.goto(coord.http + "/leaderboard?test=all&sort=model&order=asc")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        page.get_by_label("Viewer token").fill("ebv_wrong")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("not a live viewer token")
        page.get_by_label("Viewer token").fill(made.stdout.strip())
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(coord.http + "/leaderboard?test=all&sort=model&order=asc")
        expect(page.get_by_role("heading", name="Leaderboard")).to_be_visible()
        (cookie,) = context.cookies()
        assert cookie["name"] == "edgebench_viewer" and cookie["httpOnly"]
        assert cookie["sameSite"] == "Lax"
        assert "edgebench_viewer" not in page.evaluate("document.cookie")
        context.close()
    finally:
        stop(coord.process)
