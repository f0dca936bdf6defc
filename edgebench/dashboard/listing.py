"""Result lists and the leaderboard: filters, sort and paging in SQL, and the same query
streamed for exports. Lists read only the columns a summary shows (never the sensor,
environment or timing columns), and what they say about devices and models (names,
hardware class, trust tier, parameter counts) comes from the fleet and the artifacts,
read once per request, not from a join per row."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, or_, select

from edgebench.coordinator.store import NotFound, Store
from edgebench.coordinator.tables import (
    Artifact,
    Device,
    LeaderboardEntry,
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
E: Any = LeaderboardEntry.__table__.c  # type: ignore[attr-defined]
D: Any = Device.__table__  # type: ignore[attr-defined]
A: Any = Artifact.__table__  # type: ignore[attr-defined]
_SUMMARY_COLUMNS = [
    R.id, R.run_id, R.job_id, R.device_id, R.created_at, R.source_sha256, R.engine_version,
    R.definitions_version, *(R[name] for name in FIELD_NAMES),
]  # fmt: skip


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


def _text_matches(text: str, lookup: Lookup, table: Any = None) -> ColumnElement[bool] | None:
    """Results whose device, model, variant or backend holds `text`. What matches is
    decided here, from the fleet, the models and the known variants and backends, so
    the database gets lists of values (indexed) rather than a LIKE on every row. With
    `table` (the leaderboard's columns), the same said of groups, or None where a model
    name matched (groups name the variant's file, not the model's)."""
    columns = R if table is None else table
    needle = text.lower()
    devices = [
        device_id
        for device_id, facts in lookup.devices.items()
        if needle in f"{facts.name} {facts.hardware_class} {facts.arch}".lower()
    ]
    models = [sha for sha, a in lookup.artifacts.items() if needle in a.filename.lower()]
    if models and table is not None:
        return None
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


def conditions(query: ResultQuery, lookup: Lookup, job_id: str | None) -> list[Any]:
    """The WHERE clause of a result list (tests are filtered by the caller: a leaderboard
    filters its groups' test columns)."""
    where: list[Any] = []
    devices, models = _device_ids(query, lookup), _model_shas(query, lookup)
    if devices is not None:
        where.append(_in(R.device_id, devices))
    if models is not None:
        where.append(or_(_in(R.source_sha256, models), _in(R.model_sha256, models)))
    for name in ("variant", "backend", "engine_version"):
        value = getattr(query, name)
        if value is not None:
            where.append(R[name] == value)
    if job_id is not None:
        where.append(R.job_id == job_id)
    if query.since is not None:
        where.append(R.created_at >= _day_start(query.since))
    if query.until is not None:
        until = _day_start(query.until) + timedelta(days=1)
        where.append(R.created_at < until)
    if query.hide_noisy:
        where.append(R.noisy == false())
    if query.q:
        where.append(_text_matches(query.q, lookup))
    return where


def _day_start(day: Any) -> datetime:
    return datetime.combine(day, time(), tzinfo=timezone.utc)


def _count(statement: Any) -> Any:
    """How many rows a list statement matches, counted without reading its columns (a
    subquery of every column made SQLite read each row at 100,000 results). The
    statement names its FROM explicitly (select_from), which this keeps."""
    return statement.with_only_columns(func.count()).order_by(None)


def _sorted(statement: Any, query: ResultQuery, *ties: Any) -> Any:
    """The statement in the query's order: nulls (unknown) last either way, then `ties`
    and the result id, so that pages never overlap. Device names, hardware classes and
    model file names sort by a join to their table (by primary key)."""
    key: Any
    if query.sort in ("device", "hardware_class"):
        statement = statement.join_from(RT, D, D.c.id == R.device_id)
        key = D.c.name if query.sort == "device" else D.c.hardware_class
    elif query.sort == "model":
        statement = statement.outerjoin_from(RT, A, A.c.sha256 == R.source_sha256)
        key = A.c.filename
    else:
        key = R[query.sort]
    ordered = key.desc() if query.order == "desc" else key.asc()
    if query.sort in NULLABLE_FIELDS or query.sort == "model":
        # unknown last either way (a bare "IS NULL" term would keep SQLite from reading a
        # non-null column's index in order, so only nullable columns get it)
        return statement.order_by(key.is_(None), ordered, *ties, R.id)
    return statement.order_by(ordered, *ties, R.id)


# ---- rows -> summaries ---------------------------------------------------------------


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
        model=lookup.model_name(row.source_sha256, row.model_sha256),
        parameters=parameters,
        size_bucket=size_bucket(parameters),
        created_at=row.created_at,
        fields={name: getattr(row, name) for name in FIELD_NAMES},
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
    with store.engine.connect() as s:
        total = -1
        if with_total:
            total = s.execute(_count(statement)).scalar_one()
        rows = s.execute(_sorted(statement, query).offset(query.offset).limit(query.limit)).all()
    return Page[ResultSummary](
        items=[summary(row, lookup) for row in rows],
        total=int(total),
        offset=query.offset,
        limit=query.limit,
    )


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

_ENTRY_COLUMNS = [E.key, E.results, E.settings_json]


def tests(store: Store) -> list[str]:
    """Every test with results, the most common (most groups) first."""
    return store.read_cached("leaderboard tests", lambda: _tests(store))


def _tests(store: Store) -> list[str]:
    count = func.count().label("groups")
    with store.engine.connect() as s:
        rows = s.execute(
            select(E.n_prompt, E.n_gen, E.n_depth, count)
            .group_by(E.n_prompt, E.n_gen, E.n_depth)
            .order_by(count.desc(), E.n_prompt, E.n_gen, E.n_depth)
        ).all()
    return [test_label(p, g, d) for p, g, d, _ in rows]


def _shown(query: LeaderboardQuery) -> Any:
    chosen = E.best_id if query.show == "best" else E.clean_id
    return func.coalesce(chosen, E.latest_id)


def _leaderboard_select(query: LeaderboardQuery, lookup: Lookup, test: str) -> Any:
    statement = (
        select(*_ENTRY_COLUMNS, *_SUMMARY_COLUMNS)
        .select_from(LeaderboardEntry.__table__)  # type: ignore[attr-defined]
        .join(Result.__table__, R.id == _shown(query))  # type: ignore[attr-defined]
        .where(*conditions(query, lookup, None))
    )
    sizes = query.model_copy(update={"test": test}).test_sizes()
    if sizes is not None:
        statement = statement.where(
            and_(E.n_prompt == sizes[0], E.n_gen == sizes[1], E.n_depth == sizes[2])
        )
    return statement.where(*_entry_conditions(query, lookup))


def _entry_conditions(query: ResultQuery, lookup: Lookup) -> list[Any]:
    """The filters a group's own columns answer (the same as its results'): said of the
    summary table too, so that its index finds one device's groups without a join per
    group."""
    where = []
    devices = _device_ids(query, lookup)
    if devices is not None:
        where.append(_in(E.device_id, devices))
    for name in ("variant", "backend"):
        if getattr(query, name) is not None:
            where.append(E[name] == getattr(query, name))
    searched = _text_matches(query.q, lookup, E) if query.q else None
    if searched is not None:
        where.append(searched)
    return where


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
        settings=json.loads(row.settings_json),
        result=summary(row, lookup),
    )


def _groups_count(query: LeaderboardQuery, lookup: Lookup, test: str) -> Any:
    """Counting groups needs their shown results only when a filter reads them; the
    default view (a test, nothing else) counts the summary table alone."""
    if conditions(query, lookup, None):
        return _count(_leaderboard_select(query, lookup, test))
    counted = select(func.count()).select_from(LeaderboardEntry.__table__)  # type: ignore[attr-defined]
    sizes = query.model_copy(update={"test": test}).test_sizes()
    if sizes is not None:
        counted = counted.where(E.n_prompt == sizes[0], E.n_gen == sizes[1], E.n_depth == sizes[2])
    return counted


def leaderboard_page(
    store: Store, query: LeaderboardQuery, *, plot: int = 0
) -> tuple[LeaderboardPage, list[LeaderboardRow]]:
    """A page of the leaderboard and, with `plot`, its first `plot` rows in the same
    order (the scatter), read by one query when the page lies within them."""
    lookup = Lookup.read(store)
    test, known = _chosen_test(store, query)
    statement = _sorted(_leaderboard_select(query, lookup, test), query, E.key)
    end = query.offset + query.limit
    with store.engine.connect() as s:
        total = s.execute(_groups_count(query, lookup, test)).scalar_one()
        if end <= plot:
            first = s.execute(statement.limit(plot)).all()
            rows, plotted = first[query.offset : end], first
        else:
            rows = s.execute(statement.offset(query.offset).limit(query.limit)).all()
            plotted = s.execute(statement.limit(plot)).all() if plot else []
    page = LeaderboardPage(
        items=[_row(row, lookup) for row in rows],
        total=int(total),
        offset=query.offset,
        limit=query.limit,
        test=test,
        tests=known,
    )
    return page, [_row(row, lookup) for row in plotted]


def leaderboard_stream(store: Store, query: LeaderboardQuery) -> Iterator[dict[str, Any]]:
    """As results_stream, for leaderboard rows."""
    lookup = Lookup.read(store)
    test, _ = _chosen_test(store, query)
    statement = _sorted(_leaderboard_select(query, lookup, test), query, E.key)

    def convert(row: Any) -> dict[str, Any]:
        entry = _row(row, lookup)
        return {"group": entry.key, "group_results": entry.results, **flat(entry.result),
                "settings": json.dumps(entry.settings, sort_keys=True)}  # fmt: skip

    return _stream(store, statement, convert)
