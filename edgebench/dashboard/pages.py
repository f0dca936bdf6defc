"""Server-rendered pages: leaderboard, fleet, device, result, compare, jobs, job. Each
view's state (filters, sort, page, axes, selection) is its URL's query string, read by
the same query models as the JSON API, so a copied link opens the same view."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from edgebench import __version__
from edgebench.coordinator.tables import is_online
from edgebench.dashboard import listing, queries, views
from edgebench.dashboard.deps import StoreDep
from edgebench.dashboard.models import (
    TRUST_TIERS,
    VERIFICATION_STATES,
    LeaderboardQuery,
    ResultQuery,
    test_label,
)
from edgebench.modelparams import BUCKET_NAMES

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
router = APIRouter(include_in_schema=False)
FLEET_PAGE = 100  # devices per fleet page


def _fmt(value: object, digits: int = 1) -> str:
    if value is None:
        return "\u2013"  # an en dash: unknown
    return f"{value:,.{digits}f}" if isinstance(value, float) else str(value)


def _with(request: Request, **changes: Any) -> str:
    """This page's URL with some query values changed (None removes one)."""
    params: list[tuple[str, Any]] = [
        (k, v) for k, v in request.query_params.multi_items() if k not in changes
    ]
    params += [(k, v) for k, v in changes.items() if v not in (None, "", False)]
    query = urlencode([(k, "true" if v is True else str(v)) for k, v in params])
    return f"{request.url.path}?{query}" if query else request.url.path


def _query_string(request: Request, **changes: Any) -> str:
    return _with(request, **changes).partition("?")[2]


templates.env.filters["num"] = _fmt
templates.env.globals.update(
    url_with=_with,
    query_with=_query_string,
    version=__version__,
    units=views.UNITS,
    meanings=views.MEANINGS,
)


def _page(request: Request, name: str, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context)


@router.get("/", response_class=HTMLResponse)
def fleet(
    request: Request,
    store: StoreDep,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    fragment: bool = False,
) -> HTMLResponse:
    """Devices a page at a time; with `fragment=true` only their table (the page
    refreshes it live)."""
    devices = queries.devices(store, offset, FLEET_PAGE)
    if fragment:
        return _page(request, "_devices.html", devices=devices.items)
    latest = listing.results_page(store, ResultQuery(limit=10), with_total=False)
    return _page(
        request,
        "fleet.html",
        page=devices,
        devices=devices.items,
        online=sum(is_online(d) for d in store.fleet()),
        queued=store.queue_depth(),
        latest=latest.items,
        jobs=queries.jobs(store, limit=5).items,
    )


@router.get("/leaderboard", response_class=HTMLResponse)
def leaderboard(
    request: Request,
    store: StoreDep,
    query: Annotated[LeaderboardQuery, Query()],
    x: Annotated[str | None, Query(max_length=40)] = None,
    y: Annotated[str, Query(max_length=40)] = "decode_tps",
) -> HTMLResponse:
    for axis in (x, y):
        if axis is not None and axis not in views.AXES:
            raise HTTPException(422, f"cannot plot {axis!r}; one of: {', '.join(views.AXES)}")
    page, plotted = listing.leaderboard_page(store, query, plot=views.SCATTER_CAP)
    x = x or views.default_x(plotted)
    chart, missing = views.scatter(plotted, x, y)
    return _page(
        request,
        "leaderboard.html",
        page=page,
        query=query,
        chart=chart,
        missing=missing,
        capped=page.total > views.SCATTER_CAP,
        cap=views.SCATTER_CAP,
        x=x,
        y=y,
        axes=views.AXES,
        options=_filter_options(store),
        export=_query_string(request, offset=None, limit=None),
    )


def _filter_options(store: Any) -> dict[str, list[str]]:
    lookup = listing.Lookup.read(store)
    facts = lookup.devices.values()
    distinct = store.result_values("variant", "backend", "engine_version")
    return {
        "model": sorted({a.filename for a in lookup.artifacts.values()}),
        "size": list(BUCKET_NAMES),
        "device": sorted(f.name for f in facts),
        "hardware_class": sorted({f.hardware_class for f in facts}),
        "arch": sorted({f.arch for f in facts if f.arch}),
        "accelerator": sorted({f.accelerator for f in facts if f.accelerator}),
        "tier": list(TRUST_TIERS),
        "verification": list(VERIFICATION_STATES),
        **distinct,
    }


@router.get("/devices/{key}", response_class=HTMLResponse)
def device_page(key: str, request: Request, store: StoreDep) -> HTMLResponse:
    device = queries.device(store, key)
    mine = LeaderboardQuery(device=device.id, test="all", sort="model", order="asc", limit=500)
    rows = listing.leaderboard_page(store, mine)[0].items
    context: dict[str, Any] = {"device": device, "rows": rows, "charts": []}
    if rows:
        context.update(_device_charts(store, device.id, rows))
    return _page(request, "device.html", **context)


@router.get("/devices/{key}/live", response_class=HTMLResponse)
def device_live(key: str, request: Request, store: StoreDep) -> HTMLResponse:
    return _page(request, "_device_live.html", device=queries.device(store, key))


def _device_charts(store: Any, device_id: str, rows: list[Any]) -> dict[str, Any]:
    """Throughput and energy per variant for the device's most common test; the ITL
    distribution and sensor curves of its newest result; that test's history."""
    counts: dict[str, int] = {}
    for row in rows:
        f = row.result.fields
        label = test_label(f["n_prompt"], f["n_gen"], f["n_depth"])
        counts[label] = counts.get(label, 0) + row.results
    test = max(counts, key=lambda t: counts[t])
    same_test = [r for r in rows if _test_of(r.result) == test]
    newest = max(rows, key=lambda r: r.result.created_at).result
    detail = queries.result_public(store, newest.id)
    first = same_test[0].result.fields
    history = listing.results_page(
        store,
        ResultQuery(device=device_id, test=test, variant=first["variant"],
                    backend=first["backend"], model=same_test[0].result.model, limit=500),
    )  # fmt: skip
    power = detail.environment.get("power_state")
    return {
        "test": test,
        "newest": newest,
        "power_state": power if isinstance(power, dict) else {},
        "charts": [
            views.throughput_bars(same_test),
            views.itl_histogram(detail),
            views.energy_bars(same_test),
            *views.sensor_charts(detail),
            views.history(history.items),
        ],
    }


def _test_of(result: Any) -> str:
    f = result.fields
    return test_label(f["n_prompt"], f["n_gen"], f["n_depth"])


@router.get("/results/{key}", response_class=HTMLResponse)
def result_page(key: str, request: Request, store: StoreDep) -> HTMLResponse:
    result = queries.result_public(store, key)
    return _page(
        request,
        "result.html",
        result=result,
        timeline=views.token_timeline([result]),
        itl=views.itl_histogram(result),
        sensor_charts=views.sensor_charts(result),
    )


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request,
    store: StoreDep,
    r: Annotated[list[str], Query(max_length=views.MAX_COMPARED)] = [],  # noqa: B006
) -> HTMLResponse:
    results = [queries.result_public(store, key) for key in dict.fromkeys(r)]
    context: dict[str, Any] = {"results": results, "lines": views.compare_table(results)}
    if results:
        context["charts"] = [
            views.compare_bars(results),
            views.energy_bars(results),
            views.token_timeline(results, first_rep_only=True),
        ]
    return _page(request, "compare.html", **context)


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(
    request: Request,
    store: StoreDep,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> HTMLResponse:
    return _page(request, "jobs.html", page=queries.jobs(store, offset, 25))


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(
    job_id: str, request: Request, store: StoreDep, fragment: bool = False
) -> HTMLResponse:
    """With `fragment=true` only the live part (runs and results), which the page's
    script fetches again while runs are in flight."""
    job = queries.job(store, job_id)
    results = listing.results_page(store, ResultQuery(job=job.id, limit=500)).items
    name = "_job_live.html" if fragment else "job.html"
    return _page(request, name, job=job, results=results)
