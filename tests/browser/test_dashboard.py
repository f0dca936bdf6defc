"""The dashboard in the real Chromium: every page loads clean and draws its charts; the
leaderboard's filters, sort and search agree with the API; views are permalinks; the
CSV download equals the API's rows; dark mode persists; 400 px never scrolls sideways;
hostile strings stay text; a job page follows its run to the end without a reload."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Dashboard

pytestmark = pytest.mark.slow
FORM_STATE = "f => new URLSearchParams(new FormData(f)).toString()"


@contextmanager
def opened(
    browser: Any, url: str, *, width: int = 1280, scheme: str = "light"
) -> Iterator[tuple[Any, list[str]]]:
    """A page and the problems it had: console errors, failed requests, dialogs."""
    context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
    page = context.new_page()
    problems: list[str] = []
    page.on(
        "console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None
    )
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
    page.on(
        "response", lambda r: problems.append(f"{r.status}: {r.url}") if r.status >= 400 else None
    )

    def on_dialog(dialog: Any) -> None:
        problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.goto(url)
    page.wait_for_load_state("networkidle")
    try:
        yield page, problems
    finally:
        context.close()


def _pages(dashboard: Dashboard) -> list[str]:
    api = dashboard.coordinator.api
    real = api("/api/v1/results", job=dashboard.real_job)
    filled = api("/api/v1/results", device=dashboard.filled.devices[0].name)
    return [
        "/leaderboard",
        "/leaderboard?test=all&show=best&sort=model&order=asc",
        "/",
        "/jobs",
        f"/jobs/{dashboard.real_job}",
        "/devices/bench-box",
        f"/devices/{dashboard.filled.devices[0].id}",
        f"/results/{real[0]['id']}",
        f"/results/{filled[0]['id']}",
        f"/compare?r={real[0]['id']}&r={real[1]['id']}&r={filled[0]['id']}",
        "/compare",
    ]


def test_every_page_loads_clean_and_draws_its_charts(dashboard: Dashboard, browser: Any) -> None:
    charted = 0
    for path in _pages(dashboard):
        with opened(browser, dashboard.url + path) as (page, problems):
            assert problems == [], (path, problems)
            for chart in page.query_selector_all("svg.chart"):
                box = chart.bounding_box()
                assert box and box["width"] > 100 and box["height"] > 40, path
                marks = chart.query_selector_all("circle, rect, polyline, path")
                note = chart.query_selector("text.nodata")
                assert marks or note, (path, chart.get_attribute("aria-label"))
                charted += bool(marks)
    assert charted >= 15


def _rows(page: Any) -> list[str]:
    return [
        row.get_attribute("data-result-id")
        for row in page.query_selector_all("table.leaderboard tbody tr")
    ]


def _api_rows(dashboard: Dashboard, page_url: str) -> list[str]:
    query: list[tuple[str, Any]] = [
        (k, v) for k, v in parse_qsl(urlsplit(page_url).query) if k not in ("x", "y")
    ]
    board = httpx.get(f"{dashboard.url}/api/v1/leaderboard", params=query, timeout=10).json()
    return [item["result"]["id"] for item in board["items"]]


def test_filters_sort_and_search_show_what_the_api_says(dashboard: Dashboard, browser: Any) -> None:
    with opened(browser, f"{dashboard.url}/leaderboard") as (page, problems):
        everything = _rows(page)
        assert everything == _api_rows(dashboard, page.url)
        for name, value in (("variant", "Q8_0"), ("device", "bench-box"), ("size", "<0.5B"),
                            ("tier", "contributor"), ("engine_version", "0.3.20"),
                            ("test", "all")):  # fmt: skip
            page.select_option(f"form#filters select[name={name}]", value)
            page.click("form#filters button[type=submit]")
            page.wait_for_load_state("networkidle")
            assert f"{name}=" in page.url
            shown = _rows(page)
            assert shown == _api_rows(dashboard, page.url), name
            page.goto(f"{dashboard.url}/leaderboard")
        page.goto(f"{dashboard.url}/leaderboard?test=all")
        page.click("th a:text('Decode tok/s')")
        page.wait_for_load_state("networkidle")
        assert "sort=decode_tps" in page.url
        ascending = _rows(page)
        assert ascending == _api_rows(dashboard, page.url) and "order=asc" in page.url
        page.fill("form#filters input[name=q]", "orin")
        page.click("form#filters button[type=submit]")
        page.wait_for_load_state("networkidle")
        found = _rows(page)
        assert found and found == _api_rows(dashboard, page.url)
        devices = page.query_selector_all("table.leaderboard tbody tr td:nth-child(5) a")
        assert devices and all(d.inner_text().startswith("orin") for d in devices)
        assert problems == []


def test_a_permalink_reopens_the_same_view_and_compare_round_trips(
    dashboard: Dashboard, browser: Any
) -> None:
    query = "test=all&variant=Q4_0&sort=ttft_ms&order=asc&x=peak_rss_mb&y=prefill_tps"
    view = f"{dashboard.url}/leaderboard?{query}"
    with opened(browser, view) as (page, _):
        rows, form = _rows(page), page.eval_on_selector("form#filters", FORM_STATE)
        axes = page.eval_on_selector("form#axes", "f => [f.x.value, f.y.value]")
        checked = page.query_selector_all("table.leaderboard input[type=checkbox]")[:2]
        for box in checked:
            box.check()
        page.click("#compare-form button")
        page.wait_for_load_state("networkidle")
        compare_url = page.url
    assert rows and axes == ["peak_rss_mb", "prefill_tps"]
    with opened(browser, view) as (again, _):
        assert _rows(again) == rows
        assert again.eval_on_selector("form#filters", FORM_STATE) == form
    ids = [v for k, v in parse_qsl(urlsplit(compare_url).query) if k == "r"]
    assert ids == rows[:2]
    with opened(browser, compare_url) as (page, problems):
        headers = page.inner_text("table.compare thead")
        assert all(i[:8] in headers for i in ids) and problems == []


def test_the_csv_download_equals_the_apis_rows(dashboard: Dashboard, browser: Any) -> None:
    with opened(browser, f"{dashboard.url}/leaderboard?test=all&variant=F16&sort=device") as (
        page,
        _,
    ):
        with page.expect_download() as waiting:
            page.click("a:text('CSV')")
        text = Path(waiting.value.path()).read_text(encoding="utf-8")
        expected = _api_rows(dashboard, page.url)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [row["result_id"] for row in rows] == expected and len(expected) > 5
    assert all(row["variant"] == "F16" for row in rows)


def test_dark_mode_follows_the_system_then_the_toggle_and_persists(
    dashboard: Dashboard, browser: Any
) -> None:
    background = "getComputedStyle(document.body).backgroundColor"
    with opened(browser, f"{dashboard.url}/leaderboard", scheme="dark") as (page, _):
        dark = page.evaluate(background)
        page.click("#theme-toggle")
        assert page.evaluate("document.documentElement.dataset.theme") == "light"
        light = page.evaluate(background)
        assert light != dark
        page.click("#theme-toggle")
        assert page.evaluate(background) == dark
        page.reload()
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"
        assert page.evaluate(background) == dark
        assert page.inner_text("#theme-name") == "dark"


def test_no_page_scrolls_sideways_at_400_px(dashboard: Dashboard, browser: Any) -> None:
    for path in _pages(dashboard):
        with opened(browser, dashboard.url + path, width=400) as (page, problems):
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, (path, overflow)
            assert problems == [], (path, problems)


def test_hostile_strings_are_shown_as_text(dashboard: Dashboard, browser: Any) -> None:
    device = dashboard.filled.devices[0]
    failed = dashboard.coordinator.api("/api/v1/jobs")
    with_error = next(j["id"] for j in failed if any(r["error"] for r in j["runs"]))
    for path in (f"/devices/{device.id}", f"/jobs/{with_error}", "/leaderboard?test=all", "/"):
        with opened(browser, dashboard.url + path) as (page, problems):
            assert problems == [], (path, problems)
            assert page.query_selector("img[src=x]") is None
            assert page.evaluate("document.querySelectorAll('main script').length") == 0
            text = page.inner_text("main")
            assert "<img src=x onerror=alert(1)>" in text and "[/bold]" in text, path


def test_a_job_page_follows_its_run_to_the_end_without_a_reload(
    dashboard: Dashboard, browser: Any, tiny_model: Any
) -> None:
    submitted = dashboard.coordinator.cli(
        "jobs", "submit", "--model", str(tiny_model), "--device", "bench-box",
        "--sustained", "4", "--window", "1", "-p", "8", "-n", "16", "--warmup", "0",
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.splitlines()[0]
    with opened(browser, f"{dashboard.url}/jobs/{job_id}") as (page, problems):
        page.evaluate("window.notReloaded = true")
        assert page.inner_text("#job-state") in ("queued", "running")
        # locators, not wait_for_function: its string predicate is an eval, which the
        # pages' Content-Security-Policy refuses
        expect(page.locator("#job-state")).to_have_text("running", timeout=60_000)
        expect(page.locator("#job-state")).to_have_text("succeeded", timeout=90_000)
        assert page.evaluate("window.notReloaded") is True
        assert page.query_selector_all("table.results tbody tr")
        assert problems == []
