"""The leaderboard's summary table (tables.LEADERBOARD), kept up to date in the
transaction that stores results: per group of comparable results and per view, a copy
of the summary columns of the result the view shows.

Maintained on write so that reads cost one row per group and no join: indexes on every
result column would slow the write path, and picking the shown result per group from
100,000 results, or joining 24,000 groups to their shown results to filter and sort them,
on every page view would not meet the dashboard's latency target (benchmarks/RESULTS.md).

Which result a view shows, as a rank (the higher rank wins; a tie goes to the newer):
`newest`: (not noisy, created_at); `best`: (not noisy, decode_tps if not noisy, created_at).
The rank is said twice, once in Python (merging one batch) and once in SQL (against the
stored row); tests check them against each other and against a brute force."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, and_, case, delete, func, not_, or_, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from edgebench.coordinator.tables import (
    LEADERBOARD,
    LEADERBOARD_VIEWS,
    SUMMARY_COLUMNS,
    Result,
    ResultPayload,
)

GROUP_COLUMNS = ("model_sha256", "variant", "backend", "device_id", "n_depth", "n_prompt",
                 "n_gen", "threads")  # fmt: skip
_COPIED = tuple("result_id" if name == "id" else name for name in SUMMARY_COLUMNS)
_RESULT: Any = Result.__table__  # type: ignore[attr-defined]
_PAYLOAD: Any = ResultPayload.__table__  # type: ignore[attr-defined]


def settings_in_force(environment_json: str) -> str:
    """The engine settings a result ran with, as canonical JSON (a group's last part)."""
    try:
        settings = json.loads(environment_json).get("settings", {}).get("in_force", {})
    except (ValueError, AttributeError):
        settings = {}
    return json.dumps(settings if isinstance(settings, dict) else {}, sort_keys=True)


def entries_of(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The one-result leaderboard rows (one per view) of a stored result row."""
    settings = settings_in_force(result.get("environment_json") or "{}")
    values = [result[name] for name in GROUP_COLUMNS] + [settings]
    key = hashlib.sha256(json.dumps(values).encode()).hexdigest()
    copied = {name: result[name] for name in SUMMARY_COLUMNS if name != "id"}
    shared = {"key": key, "results": 1, "settings_json": settings, "result_id": result["id"]}
    return [{**shared, **copied, "view": view} for view in LEADERBOARD_VIEWS]


def _rank(view: str, row: Mapping[str, Any]) -> tuple[Any, ...]:
    clean = not row["noisy"]
    if view == "best":
        return (clean, row["decode_tps"] if clean else 0.0, row["created_at"])
    return (clean, row["created_at"])


def _merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    shown = new if _rank(new["view"], new) >= _rank(old["view"], old) else old
    return dict(shown, results=old["results"] + new["results"])


def _replaces(view: str, new: Any, old: Any) -> Any:
    """SQL: the new row's rank is at least the stored one's (as _rank)."""
    new_clean, old_clean = not_(new.noisy), not_(old.noisy)
    newer = new.created_at >= old.created_at
    same_class = new.noisy == old.noisy
    if view == "best":
        faster = new.decode_tps > old.decode_tps
        as_fast = new.decode_tps == old.decode_tps
        by_speed = and_(new_clean, old_clean, or_(faster, and_(as_fast, newer)))
        return or_(and_(new_clean, old.noisy), by_speed, and_(new.noisy, old.noisy, newer))
    return or_(and_(new_clean, old.noisy), and_(same_class, newer))


def _upsert(dialect: str, view: str) -> Any:
    insert: Any = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect](LEADERBOARD)
    new, old = insert.excluded, LEADERBOARD.c
    replaces = _replaces(view, new, old)
    copied = {name: case((replaces, new[name]), else_=old[name]) for name in _COPIED}
    return insert.on_conflict_do_update(
        index_elements=["key", "view"],
        set_={"results": old.results + new.results, **copied},
    )


def record(connection: Connection, results: Iterable[Mapping[str, Any]]) -> None:
    """Adds stored results to their groups (in the caller's transaction). Results of one
    group are merged first: one statement may not update a row twice on PostgreSQL."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for result in results:
        for entry in entries_of(result):
            held = merged.get((entry["key"], entry["view"]))
            merged[entry["key"], entry["view"]] = _merge(held, entry) if held else entry
    for view in LEADERBOARD_VIEWS:
        rows = [row for (_, of_view), row in merged.items() if of_view == view]
        if rows:
            connection.execute(_upsert(connection.dialect.name, view), rows)


def forget(connection: Connection, deleted: Mapping[str, Any]) -> None:
    """Recounts the group of a result just deleted (its summary columns and its
    environment_json) from the results the group still has; a group left empty goes."""
    key = entries_of(deleted)[0]["key"]
    connection.execute(delete(LEADERBOARD).where(LEADERBOARD.c.key == key))
    columns = [_RESULT.c[name] for name in SUMMARY_COLUMNS]
    same_group = [_RESULT.c[name] == deleted[name] for name in GROUP_COLUMNS]
    rows = connection.execute(
        select(*columns, _PAYLOAD.c.environment_json)
        .join(_PAYLOAD, _PAYLOAD.c.result_id == _RESULT.c.id)
        .where(*same_group)
    )
    record(connection, [r for r in map(dict, rows.mappings()) if entries_of(r)[0]["key"] == key])


def rebuild(connection: Connection, batch: int = 2000) -> None:
    """Refills the table from every stored result (a store made before it existed)."""
    connection.execute(delete(LEADERBOARD))
    columns = [_RESULT.c[name] for name in SUMMARY_COLUMNS]
    order = (_RESULT.c.created_at, _RESULT.c.id)
    # read a batch at a time by key, not through one open cursor: PostgreSQL cannot write
    # on a connection whose server-side cursor is still open
    statement = (
        select(*columns, _PAYLOAD.c.environment_json)
        .join(_PAYLOAD, _PAYLOAD.c.result_id == _RESULT.c.id)
        .order_by(*order)
        .limit(batch)
    )
    after: tuple[Any, Any] | None = None
    while True:
        page = statement if after is None else statement.where(tuple_(*order) > tuple_(*after))
        chunk = [dict(row) for row in connection.execute(page).mappings()]
        if not chunk:
            return
        record(connection, chunk)
        after = (chunk[-1]["created_at"], chunk[-1]["id"])


def needs_rebuild(connection: Connection) -> bool:
    """True when results exist but no group does (the table was just added)."""
    groups = connection.execute(select(func.count()).select_from(LEADERBOARD)).scalar_one()
    return groups == 0 and connection.execute(select(_RESULT.c.id).limit(1)).first() is not None
