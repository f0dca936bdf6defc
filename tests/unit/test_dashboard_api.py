"""The read API over a store filled through the write path: paging with totals, every
filter against the rows it should keep, sorting, the summary/detail split, the
leaderboard's grouping and choice of result, streamed exports equal to the lists, and
bad query values (a clear 422, never a 500), for the JSON API and the pages alike."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edgebench.coordinator.store import Store
from edgebench.coordinator.tables import LEADERBOARD, Run
from edgebench.dashboard.app import create_app
from edgebench.dashboard.deps import ApiContext
from edgebench.report import csv_cell
from tests.storefill import HOSTILE, Filled, fill

DEVICES, RESULTS = 12, 600


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Filled]:
    path = tmp_path_factory.mktemp("api") / "store.db"
    store = Store(f"sqlite:///{path}", fleet_read_seconds=0.0)
    return store, fill(store, devices=DEVICES, results=RESULTS, hostile=True, samples=20)


@pytest.fixture(scope="module")
def api(filled: tuple[Store, Filled]) -> Iterator[TestClient]:
    with TestClient(create_app(ApiContext(filled[0]))) as client:
        yield client


def _get(api: TestClient, path: str, **params: Any) -> Any:
    response = api.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _all(api: TestClient, **params: Any) -> list[dict[str, Any]]:
    rows = api.get("/api/v1/results/export", params={**params, "format": "jsonl"})
    assert rows.status_code == 200, rows.text
    return [json.loads(line) for line in rows.text.splitlines()]


def test_results_are_paged_with_a_total_and_pages_never_overlap(api: TestClient) -> None:
    first = _get(api, "/api/v1/results", limit=7)
    assert first["total"] == RESULTS and len(first["items"]) == 7
    seen: list[str] = []
    for offset in range(0, RESULTS, 250):
        page = _get(api, "/api/v1/results", limit=250, offset=offset, sort="decode_tps")
        seen += [item["id"] for item in page["items"]]
    assert len(seen) == len(set(seen)) == RESULTS
    past_the_end = _get(api, "/api/v1/results", offset=RESULTS + 5)
    assert past_the_end["items"] == [] and past_the_end["total"] == RESULTS


def test_lists_carry_summaries_and_one_result_carries_everything(api: TestClient) -> None:
    item = _get(api, "/api/v1/results", limit=1)["items"][0]
    assert not {"sensors", "environment", "rep_timings", "windows_tps"} & set(item)
    assert item["hardware_class"] and item["trust_tier"] in ("operator", "contributor")
    detail = _get(api, f"/api/v1/results/{item['id']}")
    assert detail["fields"] == item["fields"]
    assert detail["sensors"]["samples"] and detail["environment"]["settings"]
    assert [len(rep["token_ns"]) for rep in detail["rep_timings"]] == [32, 32, 32]
    assert _get(api, f"/api/v1/results/{item['id'][:8]}")["id"] == item["id"]
    assert api.get("/api/v1/results/nope-nope").status_code == 404


@pytest.mark.parametrize(
    ("name", "value", "keeps"),
    [
        ("variant", "Q8_0", lambda r: r["variant"] == "Q8_0"),
        ("backend", "onnx", lambda r: r["backend"] == "onnx"),
        ("engine_version", "0.3.20", lambda r: r["engine_version"] == "0.3.20"),
        ("device", "pi5-0000", lambda r: r["device"] == "pi5-0000"),
        ("arch", "x86_64", lambda r: r["device"].startswith("laptop")),
        ("accelerator", "cuda", lambda r: r["device"].startswith("orin")),
        ("tier", "contributor", lambda r: r["trust_tier"] == "contributor"),
        ("size", "<0.5B", lambda r: r["parameters"] < 500_000_000),
        ("size", "1.5-4B", lambda r: 1_500_000_000 <= r["parameters"] < 4_000_000_000),
        ("model", "tinyllama-1.1b-chat-f16.gguf", lambda r: r["model"].startswith("tinyllama")),
        ("test", "p512-g32", lambda r: r["n_prompt"] == 512 and r["n_gen"] == 32),
        ("hide_noisy", "true", lambda r: not r["noisy"]),
        ("q", "orin", lambda r: r["device"].startswith("orin")),
        ("q", "q4_0", lambda r: r["variant"] == "Q4_0"),
    ],
)
def test_each_filter_keeps_exactly_the_rows_it_names(
    api: TestClient, name: str, value: str, keeps: Any
) -> None:
    every = _all(api)
    expected = {row["result_id"] for row in every if keeps(row)}
    assert len(expected) < len(every)  # and none kept, or some
    kept = _all(api, **{name: value})
    assert {row["result_id"] for row in kept} == expected
    page = _get(api, "/api/v1/results", **{name: value}, limit=5)
    assert page["total"] == len(expected)


def test_hardware_class_filter_and_date_range(api: TestClient) -> None:
    every = _all(api)
    a_class = every[0]["hardware_class"]
    kept = _all(api, hardware_class=a_class)
    assert kept and all(row["hardware_class"] == a_class for row in kept)
    today = date.today()
    around = {"since": str(today - timedelta(days=1)), "until": str(today + timedelta(days=1))}
    assert len(_all(api, **around)) == len(every)
    assert _all(api, until=str(today - timedelta(days=2))) == []


@pytest.mark.parametrize("column", ["decode_tps", "ttft_ms", "model", "device", "created_at"])
def test_sorting_orders_every_row(api: TestClient, column: str) -> None:
    for order in ("asc", "desc"):
        rows = _all(api, sort=column, order=order)
        values = [row[column] for row in rows]
        assert values == sorted(values, reverse=order == "desc")


@pytest.mark.parametrize(
    ("column", "order"),
    [("decode_tps", "desc"), ("temp_max_c", "asc"), ("temp_max_c", "desc"), ("device", "asc")],
)
def test_pages_read_from_the_end_equal_the_same_slice_of_the_whole_list(
    api: TestClient, column: str, order: str
) -> None:
    """Pages past the middle are read backwards and turned round: each equals the
    export's rows at its offset (nulls last, ties by id, exactly as forwards)."""
    every = [row["result_id"] for row in _all(api, sort=column, order=order)]
    for offset in (0, 299, 300, 301, 577, RESULTS - 7, RESULTS - 1, RESULTS, RESULTS + 5):
        page = _get(api, "/api/v1/results", sort=column, order=order, offset=offset, limit=23)
        assert [row["id"] for row in page["items"]] == every[offset : offset + 23], offset
        assert page["total"] == RESULTS


def test_the_leaderboard_keeps_one_row_per_group_and_shows_its_newest_clean_result(
    api: TestClient,
) -> None:
    board = _get(api, "/api/v1/leaderboard", test="all", limit=500)
    every = _all(api)
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in every:
        key = (row["model"], row["variant"], row["backend"], row["device"], row["n_prompt"],
               row["n_gen"], row["n_depth"], row["threads"])  # fmt: skip
        groups.setdefault(key, []).append(row)
    assert board["total"] == len(groups) == len(board["items"])
    by_id = {row["result_id"]: row for row in every}
    for item in board["items"]:
        shown = by_id[item["result"]["id"]]
        key = (shown["model"], shown["variant"], shown["backend"], shown["device"],
               shown["n_prompt"], shown["n_gen"], shown["n_depth"], shown["threads"])  # fmt: skip
        members = groups[key]
        assert item["results"] == len(members)
        clean = [m for m in members if not m["noisy"]] or members
        assert shown["created_at"] == max(m["created_at"] for m in clean)
    best = _get(api, "/api/v1/leaderboard", test="all", show="best", limit=500)
    for item in best["items"]:
        shown = by_id[item["result"]["id"]]
        key = (shown["model"], shown["variant"], shown["backend"], shown["device"],
               shown["n_prompt"], shown["n_gen"], shown["n_depth"], shown["threads"])  # fmt: skip
        clean = [m for m in groups[key] if not m["noisy"]] or groups[key]
        assert shown["decode_tps"] == max(m["decode_tps"] for m in clean)


def test_the_leaderboard_shows_the_most_common_test_unless_told(api: TestClient) -> None:
    default = _get(api, "/api/v1/leaderboard")
    assert default["test"] == default["tests"][0] and len(default["tests"]) == 2
    assert all(
        f"p{f['n_prompt']}-g{f['n_gen']}" == default["test"]
        for f in (item["result"]["fields"] for item in default["items"])
    )
    other = _get(api, "/api/v1/leaderboard", test=default["tests"][1])
    assert other["test"] == default["tests"][1] and other["items"]


def test_exports_equal_the_lists_and_neutralise_formulas(
    api: TestClient, filled: tuple[Store, Filled]
) -> None:
    store, _ = filled
    store.add_artifact(sha256="f" * 64, filename="=HYPERLINK(1).gguf", size_bytes=1, fmt="gguf")
    text = api.get("/api/v1/leaderboard/export", params={"format": "csv", "test": "all"}).text
    rows = list(csv.DictReader(io.StringIO(text)))
    board = _get(api, "/api/v1/leaderboard", test="all", limit=500)
    assert [r["result_id"] for r in rows] == [i["result"]["id"] for i in board["items"]]
    assert any(r["model"].startswith(HOSTILE[:5]) for r in rows)
    assert csv_cell("=HYPERLINK(1).gguf") == "'=HYPERLINK(1).gguf" and csv_cell(-1.5) == -1.5
    as_json = api.get("/api/v1/results/export", params={"format": "json", "variant": "F16"})
    f16 = {r["result_id"] for r in _all(api, variant="F16")}
    assert {r["result_id"] for r in as_json.json()} == f16
    detail = _all(api, device="pi5-0000", detail="true")
    assert detail and all(len(r["rep_timings"]) == 3 and r["sensors"] for r in detail)


BAD_QUERIES = [
    {"sort": "bogus"},
    {"sort": "timings"},
    {"order": "sideways"},
    {"limit": "0"},
    {"limit": "100000"},
    {"offset": "-1"},
    {"since": "yesterday"},
    {"until": "2026-13-45"},
    {"test": "p12"},
    {"test": "p1-g1-d1-x"},
    {"size": "huge"},
    {"tier": "root"},
    {"hide_noisy": "maybe"},
    {"q": "x" * 1000},
]
LISTS = ["/api/v1/results", "/api/v1/leaderboard", "/api/v1/results/export"]


@pytest.mark.parametrize("params", BAD_QUERIES)
@pytest.mark.parametrize("path", LISTS)
def test_bad_query_values_are_a_clear_422(
    api: TestClient, path: str, params: dict[str, str]
) -> None:
    response = api.get(path, params=params)
    assert response.status_code == 422, (path, params, response.text)
    assert response.json()["detail"][0]["loc"] == ["query", *params]


def test_a_leaderboard_shows_only_newest_or_best(api: TestClient) -> None:
    response = api.get("/api/v1/leaderboard", params={"show": "worst"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"][-1] == "show"


@pytest.mark.parametrize("params", [*BAD_QUERIES, {"show": "worst"}, {"x": "nope"}, {"y": "x"}])
def test_pages_answer_bad_query_values_with_a_page_not_a_500(
    api: TestClient, params: dict[str, str]
) -> None:
    response = api.get("/leaderboard", params=params)
    assert response.status_code == 422 and "text/html" in response.headers["content-type"]
    assert next(iter(params)) in response.text


def test_unknown_ids_and_names_are_404s_not_500s(api: TestClient) -> None:
    for path in ("/api/v1/results?device=ghost", "/api/v1/results?job=nope", "/results/zzzz",
                 "/api/v1/results/export?job=nope", "/api/v1/leaderboard/export?device=ghost",
                 "/devices/ghost", "/compare?r=zzzz", "/jobs/zzzz"):  # fmt: skip
        assert api.get(path).status_code == 404, path
    assert api.get("/compare", params=[("r", "a")] * 5).status_code == 422


def test_every_page_renders_over_hostile_strings_as_text(
    api: TestClient, filled: tuple[Store, Filled]
) -> None:
    store, fill_info = filled
    result = _get(api, "/api/v1/results", limit=2)["items"]
    job = _get(api, "/api/v1/jobs", limit=1)["items"][0]
    first, second = result[0]["id"], result[1]["id"]
    pages = ["/", "/leaderboard", "/leaderboard?test=all&show=best", "/jobs",
             f"/jobs/{job['id']}", f"/devices/{fill_info.devices[0].id}",
             f"/results/{first}", f"/compare?r={first}&r={second}"]  # fmt: skip
    with store.session() as s:
        failed_job = s.get(Run, fill_info.failed_runs[0]).job_id  # type: ignore[union-attr]
    pages.append(f"/jobs/{failed_job}")
    for path in pages:
        response = api.get(path)
        assert response.status_code == 200, path
        assert "<img src=x" not in response.text and "<script>alert" not in response.text, path
    assert "&lt;img src=x onerror=alert(1)&gt;" in api.get(f"/jobs/{failed_job}").text


def test_a_store_whose_leaderboard_is_empty_rebuilds_it(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}", fleet_read_seconds=0.0)
    fill(store, devices=3, results=60, samples=5)
    with store.engine.connect() as connection:
        before = sorted(connection.execute(LEADERBOARD.select()).all())
    with store.writing() as s:
        s.connection().execute(LEADERBOARD.delete())
    reopened = Store(store.url)
    with reopened.engine.connect() as connection:
        assert sorted(connection.execute(LEADERBOARD.select()).all()) == before


@pytest.mark.parametrize(
    ("params", "keeps"),
    [
        ({"q": "orin"}, lambda r: r["device_name"].startswith("orin")),
        ({"q": "q8_0"}, lambda r: r["fields"]["variant"] == "Q8_0"),
        ({"q": "smollm"}, lambda r: "smollm" in r["model"]),
        ({"device": "pi4-0001", "variant": "F16"},
         lambda r: r["device_name"] == "pi4-0001" and r["fields"]["variant"] == "F16"),
    ],
)  # fmt: skip
def test_leaderboard_filters_keep_exactly_their_groups(
    api: TestClient, params: dict[str, str], keeps: Any
) -> None:
    every = _get(api, "/api/v1/leaderboard", test="all", limit=500)["items"]
    expected = {item["key"] for item in every if keeps(item["result"])}
    kept = _get(api, "/api/v1/leaderboard", test="all", limit=500, **params)
    assert expected and {item["key"] for item in kept["items"]} == expected
    assert kept["total"] == len(expected)
