"""Result lists and the leaderboard: filters, sort and paging in SQL, and the same query
streamed for exports. Lists read only the columns a summary shows (never the sensor,
environment or timing columns), and what they say about devices and models (names,
hardware class, trust tier, parameter counts) comes from the fleet and the artifacts,
read once per request, not from a join per row."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from operator import itemgetter
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, or_, select

from edgebench.coordinator.store import NotFound, Store
from edgebench.coordinator.tables import (
    LEADERBOARD,
    SUMMARY_COLUMNS,
    Artifact,
    Device,
    Result,
    ResultPayload,
    identity_of,
    trust_tier,
)
from edgebench.dashboard.models import (
    LeaderboardPage,
    LeaderboardQuery,
    LeaderboardRow,
    Page,
    ResultQuery,
    ResultSummary,
    test_label,
)
from edgebench.device import hardware_class
from edgebench.measure.packing import unpack_reps
from edgebench.measure.record import FIELD_NAMES, NULLABLE_FIELDS
from edgebench.modelparams import size_bucket

EXPORT_BATCH = 1000  # rows fetched at a time while an export streams

# Core table columns (typed Any: the ORM attributes' types do not compose in mypy).
RT: Any = Result.__table__  # type: ignore[attr-defined]
R: Any = RT.c
L: Any = LEADERBOARD.c
D: Any = Device.__table__  # type: ignore[attr-defined]
A: Any = Artifact.__table__  # type: ignore[attr-defined]
_SUMMARY_COLUMNS = [R[name] for name in SUMMARY_COLUMNS]
# The leaderboard's copy of its shown results' summary columns, named as the result's.
_SHOWN_COLUMNS = [L.result_id.label("id") if n == "id" else L[n] for n in SUMMARY_COLUMNS]


@dataclass(frozen=True)
class _DeviceFacts:
    name: str
    hardware_class: str
    trust_tier: str
    arch: str
    accelerator: str
    cpu_model: str


@dataclass(frozen=True)
class Lookup:
    """The fleet and the models as one request sees them."""

    devices: dict[str, _DeviceFacts]
    artifacts: dict[str, Artifact]
    values: dict[str, list[str]]  # the variants and backends results have

    @classmethod
    def read(cls, store: Store) -> Lookup:
        return cls(
            {device.id: _facts(device) for device in store.fleet()},
            store.artifacts(),
            store.result_values("variant", "backend"),
        )

    def model_name(self, source_sha256: str, model_sha256: str) -> str:
        artifact = self.artifacts.get(source_sha256 or model_sha256)
        return artifact.filename if artifact else (source_sha256 or model_sha256)[:12]

    def parameters(self, source_sha256: str, model_sha256: str) -> int | None:
        artifact = self.artifacts.get(source_sha256 or model_sha256)
        return artifact.parameters if artifact else None


def _facts(device: Device) -> _DeviceFacts:
    identity = identity_of(device)
    return _DeviceFacts(
        name=device.name,
        hardware_class=device.hardware_class or hardware_class(identity),
        trust_tier=trust_tier(device),
        arch=identity.arch,
        accelerator=identity.accelerator,
        cpu_model=identity.cpu_model,
    )


# ---- filters -------------------------------------------------------------------------


def _device_ids(query: ResultQuery, lookup: Lookup) -> set[str] | None:
    """The devices the device filters allow; None when no device filter is set."""
    wanted = {
        "arch": query.arch,
        "accelerator": query.accelerator,
        "hardware_class": query.hardware_class,
        "trust_tier": query.tier,
    }
    if query.device is None and not any(wanted.values()):
        return None
    named = [i for i, facts in lookup.devices.items() if query.device in (facts.name, i)]
    if query.device is not None and not named:
        raise NotFound(f"no device {query.device!r}")
    return {
        device_id
        for device_id, facts in lookup.devices.items()
        if query.device in (None, facts.name, device_id)
        and all(value is None or getattr(facts, name) == value for name, value in wanted.items())
    }


def _model_shas(query: ResultQuery, lookup: Lookup) -> set[str] | None:
    if query.model is None and query.size is None:
        return None
    return {
        sha
        for sha, artifact in lookup.artifacts.items()
        if query.model in (None, artifact.filename, sha)
        and query.size in (None, size_bucket(artifact.parameters))
    }


def _text_matches(text: str, lookup: Lookup, columns: Any) -> ColumnElement[bool]:
    """Results whose device, model, variant or backend holds `text`. What matches is
    decided here, from the fleet, the models and the known variants and backends, so
    the database gets lists of values (indexed) rather than a LIKE on every row."""
    needle = text.lower()
    devices = [
        device_id
        for device_id, facts in lookup.devices.items()
        if needle in f"{facts.name} {facts.hardware_class} {facts.arch}".lower()
    ]
    models = [sha for sha, a in lookup.artifacts.items() if needle in a.filename.lower()]
    terms = []
    if devices:
        terms.append(columns.device_id.in_(devices))
    if models:
        terms.append(columns.source_sha256.in_(models))
    for name in ("variant", "backend"):
        named = [value for value in lookup.values.get(name, []) if needle in value.lower()]
        if named:
            terms.append(columns[name].in_(named))
    return or_(*terms) if terms else false()


def _in(column: Any, values: set[str]) -> ColumnElement[bool]:
    return column.in_(sorted(values)) if values else false()


def conditions(
    query: ResultQuery, lookup: Lookup, job_id: str | None, table: Any = RT
) -> list[Any]:
    """The WHERE clause of a result list, said of the result table or of the
    leaderboard's copies (tests are filtered by the caller)."""
    c = table.c
    where: list[Any] = []
    devices, models = _device_ids(query, lookup), _model_shas(query, lookup)
    if devices is not None:
        where.append(_in(c.device_id, devices))
    if models is not None:
        where.append(or_(_in(c.source_sha256, models), _in(c.model_sha256, models)))
    for name in ("variant", "backend", "engine_version", "verification"):
        value = getattr(query, name)
        if value is not None:
            where.append(c[name] == value)
    if job_id is not None:
        where.append(c.job_id == job_id)
    if query.since is not None:
        where.append(c.created_at >= _day_start(query.since))
    if query.until is not None:
        until = _day_start(query.until) + timedelta(days=1)
        where.append(c.created_at < until)
    if query.hide_noisy:
        where.append(c.noisy == false())
    if query.q:
        where.append(_text_matches(query.q, lookup, c))
    return where


def _day_start(day: Any) -> datetime:
    return datetime.combine(day, time(), tzinfo=timezone.utc)


def _count(statement: Any) -> Any:
    """How many rows a list statement matches, counted without reading its columns (a
    subquery of every column made SQLite read each row at 100,000 results). The
    statement names its FROM explicitly (select_from), which this keeps."""
    return statement.with_only_columns(func.count()).order_by(None)


def _sorted(statement: Any, query: ResultQuery, table: Any = RT, *, backwards: bool = False) -> Any:
    """The statement in the query's order (`backwards`: exactly reversed): nulls
    (unknown) last either way, then the row's primary key, so that pages never overlap.
    Device names, hardware classes and model file names sort by a join to their table
    (by primary key)."""
    key: Any
    if query.sort in ("device", "hardware_class"):
        statement = statement.join_from(table, D, D.c.id == table.c.device_id)
        key = D.c.name if query.sort == "device" else D.c.hardware_class
    elif query.sort == "model":
        statement = statement.outerjoin_from(table, A, A.c.sha256 == table.c.source_sha256)
        key = A.c.filename
    else:
        key = table.c[query.sort]

    def way(term: Any, descending: bool = False) -> Any:
        return term.desc() if descending != backwards else term.asc()

    ordered = way(key, query.order == "desc")
    unique = [way(column) for column in table.primary_key.columns]
    if query.sort in NULLABLE_FIELDS or query.sort == "model":
        # unknown last either way (a bare "IS NULL" term would keep SQLite from reading a
        # non-null column's index in order, so only nullable columns get it)
        return statement.order_by(way(key.is_(None)), ordered, *unique)
    return statement.order_by(ordered, *unique)


# ---- rows -> summaries ---------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _fields_of(columns: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """Reads a row's stable fields by position (a page and its scatter convert hundreds
    of rows; attribute access by name was most of that)."""
    return itemgetter(*(columns.index(name) for name in FIELD_NAMES))


def _stable_fields(row: Any) -> dict[str, Any]:
    columns = getattr(row, "_fields", None)
    if columns is None:  # a Result row object (one result's own page)
        return {name: getattr(row, name) for name in FIELD_NAMES}
    return dict(zip(FIELD_NAMES, _fields_of(columns)(row), strict=True))


@functools.lru_cache(maxsize=256)
def _settings(settings_json: str) -> dict[str, Any]:
    return dict(json.loads(settings_json))


def summary(row: Any, lookup: Lookup) -> ResultSummary:
    facts = lookup.devices.get(row.device_id)
    parameters = lookup.parameters(row.source_sha256, row.model_sha256)
    return ResultSummary.model_construct(
        id=row.id,
        run_id=row.run_id,
        job_id=row.job_id,
        device_id=row.device_id,
        device_name=facts.name if facts else "?",
        hardware_class=facts.hardware_class if facts else "",
        trust_tier=facts.trust_tier if facts else "",
        verification=row.verification,
        model=lookup.model_name(row.source_sha256, row.model_sha256),
        parameters=parameters,
        size_bucket=size_bucket(parameters),
        created_at=row.created_at,
        fields=_stable_fields(row),
        engine_version=row.engine_version,
        definitions_version=row.definitions_version,
    )


def flat(item: ResultSummary) -> dict[str, Any]:
    """One export row: identity columns, then the stable fields."""
    return {
        "result_id": item.id,
        "job_id": item.job_id,
        "device": item.device_name,
        "hardware_class": item.hardware_class,
        "trust_tier": item.trust_tier,
        "verification": item.verification,
        "model": item.model,
        "parameters": item.parameters,
        "created_at": item.created_at.isoformat() if item.created_at else None,
        "engine_version": item.engine_version,
        "definitions_version": item.definitions_version,
        **item.fields,
    }


# ---- result lists ----------------------------------------------------------------------


def _result_select(query: ResultQuery, lookup: Lookup, job_id: str | None) -> Any:
    statement = select(*_SUMMARY_COLUMNS).select_from(RT).where(*conditions(query, lookup, job_id))
    sizes = query.test_sizes()
    if sizes is not None:
        statement = statement.where(
            R.n_prompt == sizes[0], R.n_gen == sizes[1], R.n_depth == sizes[2]
        )
    return statement


def _job_id(store: Store, query: ResultQuery) -> str | None:
    return store.get_job(query.job).id if query.job else None


def results_page(
    store: Store, query: ResultQuery, *, with_total: bool = True
) -> Page[ResultSummary]:
    """A page of results; without `with_total` the count is skipped (total: -1)."""
    lookup = Lookup.read(store)
    statement = _result_select(query, lookup, _job_id(store, query))
    total = -1
    if with_total and query.offset == 0:  # the usual page: count and read side by side
        counting = _count_apart(store, statement)
        with store.engine.connect() as s:
            rows = list(s.execute(_page_of(statement, query, total)).all())
        total = counting.result()
    else:
        if with_total:  # a later page: where it lies decides how it is read
            total = _count_apart(store, statement).result()
        with store.engine.connect() as s:
            rows = list(s.execute(_page_of(statement, query, total)).all())
    if with_total and query.offset > total // 2:
        rows.reverse()
    return Page[ResultSummary](
        items=[summary(row, lookup) for row in rows],
        total=int(total),
        offset=query.offset,
        limit=query.limit,
    )


# Counting a filtered list scans the same rows as reading its first page; on a
# connection of its own the database does both at once (the sqlite3 module and psycopg
# release the GIL while a statement runs): ~65 ms instead of ~125 ms for a filtered,
# sorted page of 100,000 results.
_COUNTING = ThreadPoolExecutor(max_workers=4, thread_name_prefix="edgebench-count")


def _count_apart(store: Store, statement: Any) -> Future[int]:
    def count() -> int:
        with store.engine.connect() as s:
            return int(s.execute(_count(statement)).scalar_one())

    return _COUNTING.submit(count)


def _page_of(statement: Any, query: ResultQuery, total: int) -> Any:
    """The page's rows; a page in the second half is read from the end, in reverse (a
    database must sort every row before it to skip them: ~1 s for the last page of
    100,000 results sorted on an unindexed column, as cheap as the first page this way)."""
    if total < 0 or query.offset <= total // 2:
        return _sorted(statement, query).offset(query.offset).limit(query.limit)
    after = max(total - query.offset, 0)
    taken = min(query.limit, after)
    return _sorted(statement, query, backwards=True).offset(after - taken).limit(taken)


P: Any = ResultPayload.__table__  # type: ignore[attr-defined]
_DETAIL_COLUMNS = [R.reps_mode, R.window_s, P.c.windows_json, P.c.environment_json,
                   P.c.sensors_json, P.c.timings]  # fmt: skip


def _detail(row: Any) -> dict[str, Any]:
    """What a result carries beyond the summary (exports with `detail`)."""
    return {
        "source_sha256": row.source_sha256,
        "reps_mode": row.reps_mode,
        "window_s": row.window_s,
        "windows_tps": json.loads(row.windows_json),
        "environment": json.loads(row.environment_json),
        "sensors": json.loads(row.sensors_json),
        "rep_timings": [
            {"start_ns": r.start_ns, "prefill_ns": r.prefill_ns, "token_ns": list(r.token_ns)}
            for r in unpack_reps(row.timings)
        ],
    }


def results_stream(
    store: Store, query: ResultQuery, *, detail: bool = False
) -> Iterator[dict[str, Any]]:
    """Every result the filters match, in the query's order, as export rows, fetched a
    batch at a time (constant memory however many match); `detail` adds provenance,
    sensors and raw timings (json and jsonl). Filters are checked now (an unknown job
    or device raises here, before a response starts); rows are read as they are sent."""
    lookup = Lookup.read(store)
    statement = _result_select(query, lookup, _job_id(store, query))
    statement = _sorted(statement, query)
    if not detail:
        return _stream(store, statement, lambda row: flat(summary(row, lookup)))
    statement = statement.join(P, P.c.result_id == R.id).add_columns(*_DETAIL_COLUMNS)
    return _stream(store, statement, lambda row: {**flat(summary(row, lookup)), **_detail(row)})


def _stream(store: Store, statement: Any, convert: Any) -> Iterator[dict[str, Any]]:
    with store.engine.connect() as connection:
        rows = connection.execution_options(stream_results=True, yield_per=EXPORT_BATCH)
        for chunk in rows.execute(statement).partitions(EXPORT_BATCH):
            for row in chunk:
                yield convert(row)


# ---- the leaderboard -----------------------------------------------------------------


def tests(store: Store) -> list[str]:
    """Every test with results, the most common (most groups) first."""
    return store.read_cached("leaderboard tests", lambda: _tests(store))


def _tests(store: Store) -> list[str]:
    count = func.count().label("groups")
    with store.engine.connect() as s:
        rows = s.execute(
            select(L.n_prompt, L.n_gen, L.n_depth, count)
            .where(L.view == "newest")
            .group_by(L.n_prompt, L.n_gen, L.n_depth)
            .order_by(count.desc(), L.n_prompt, L.n_gen, L.n_depth)
        ).all()
    return [test_label(p, g, d) for p, g, d, _ in rows]


def _leaderboard_select(query: LeaderboardQuery, lookup: Lookup, test: str) -> Any:
    """The groups' rows of the query's view: filters and sorts read the copied columns."""
    statement = (
        select(L.key, L.results, L.settings_json, *_SHOWN_COLUMNS)
        .select_from(LEADERBOARD)
        .where(L.view == query.show, *conditions(query, lookup, None, LEADERBOARD))
    )
    sizes = query.model_copy(update={"test": test}).test_sizes()
    if sizes is not None:
        statement = statement.where(
            and_(L.n_prompt == sizes[0], L.n_gen == sizes[1], L.n_depth == sizes[2])
        )
    return statement


def _chosen_test(store: Store, query: ResultQuery) -> tuple[str, list[str]]:
    """The test a leaderboard shows: the one asked for, else the most common."""
    known = tests(store)
    if query.test:
        return query.test, known
    return (known[0] if known else "all"), known


def _row(row: Any, lookup: Lookup) -> LeaderboardRow:
    return LeaderboardRow.model_construct(
        key=row.key,
        results=row.results,
        settings=dict(_settings(row.settings_json)),
        result=summary(row, lookup),
    )


def leaderboard_page(
    store: Store, query: LeaderboardQuery, *, plot: int = 0
) -> tuple[LeaderboardPage, list[LeaderboardRow]]:
    """A page of the leaderboard and, with `plot`, its first `plot` rows in the same
    order (the scatter), read by one query when the page lies within them."""
    lookup = Lookup.read(store)
    test, known = _chosen_test(store, query)
    selected = _leaderboard_select(query, lookup, test)
    statement = _sorted(selected, query, LEADERBOARD)
    end = query.offset + query.limit
    counting = _count_apart(store, selected)
    with store.engine.connect() as s:
        if end <= plot:
            first = s.execute(statement.limit(plot)).all()
            rows, plotted = first[query.offset : end], first
        else:
            rows = s.execute(statement.offset(query.offset).limit(query.limit)).all()
            plotted = s.execute(statement.limit(plot)).all() if plot else []
    converted = {row.key: _row(row, lookup) for row in (*rows, *plotted)}
    page = LeaderboardPage(
        items=[converted[row.key] for row in rows],
        total=counting.result(),
        offset=query.offset,
        limit=query.limit,
        test=test,
        tests=known,
    )
    return page, [converted[row.key] for row in plotted]


def leaderboard_stream(store: Store, query: LeaderboardQuery) -> Iterator[dict[str, Any]]:
    """As results_stream, for leaderboard rows."""
    lookup = Lookup.read(store)
    test, _ = _chosen_test(store, query)
    statement = _sorted(_leaderboard_select(query, lookup, test), query, LEADERBOARD)

    def convert(row: Any) -> dict[str, Any]:
        entry = _row(row, lookup)
        return {"group": entry.key, "group_results": entry.results, **flat(entry.result),
                "settings": json.dumps(entry.settings, sort_keys=True)}  # fmt: skip

    return _stream(store, statement, convert)
