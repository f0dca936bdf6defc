"""The leaderboard's summary table, kept up to date in the transaction that stores
results: one row per group of comparable results (tables.LeaderboardEntry), holding the
ids of the group's newest, newest clean (not noisy) and fastest clean result.

Maintained on write so that reads cost one row per group: indexes on every result column
would slow the write path, and picking the newest result per group from 100,000 results
on every page view would not meet the dashboard's latency target."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, case, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from edgebench.coordinator.tables import LeaderboardEntry, Result, ResultPayload

GROUP_COLUMNS = ("model_sha256", "variant", "backend", "device_id", "n_depth", "n_prompt",
                 "n_gen", "threads")  # fmt: skip
_TABLE: Any = LeaderboardEntry.__table__  # type: ignore[attr-defined]
_RESULT: Any = Result.__table__  # type: ignore[attr-defined]
_PAYLOAD: Any = ResultPayload.__table__  # type: ignore[attr-defined]


def settings_in_force(environment_json: str) -> str:
    """The engine settings a result ran with, as canonical JSON (a group's last part)."""
    try:
        settings = json.loads(environment_json).get("settings", {}).get("in_force", {})
    except (ValueError, AttributeError):
        settings = {}
    return json.dumps(settings if isinstance(settings, dict) else {}, sort_keys=True)


def entry_of(result: Mapping[str, Any]) -> dict[str, Any]:
    """The one-result leaderboard row of a stored result row."""
    settings = settings_in_force(result.get("environment_json") or "{}")
    values = [result[name] for name in GROUP_COLUMNS] + [settings]
    key = hashlib.sha256(json.dumps(values).encode()).hexdigest()
    clean = not result["noisy"]
    return {
        "key": key,
        **{name: result[name] for name in GROUP_COLUMNS},
        "settings_json": settings,
        "results": 1,
        "latest_id": result["id"],
        "latest_at": result["created_at"],
        "clean_id": result["id"] if clean else None,
        "clean_at": result["created_at"] if clean else None,
        "best_id": result["id"] if clean else None,
        "best_decode_tps": result["decode_tps"] if clean else None,
    }


def _merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    merged = dict(old, results=old["results"] + new["results"])
    if new["latest_at"] >= old["latest_at"]:
        merged.update(latest_id=new["latest_id"], latest_at=new["latest_at"])
    if new["clean_at"] is not None and (
        old["clean_at"] is None or new["clean_at"] >= old["clean_at"]
    ):
        merged.update(clean_id=new["clean_id"], clean_at=new["clean_at"])
    if new["best_decode_tps"] is not None and (
        old["best_decode_tps"] is None or new["best_decode_tps"] > old["best_decode_tps"]
    ):
        merged.update(best_id=new["best_id"], best_decode_tps=new["best_decode_tps"])
    return merged


def _upsert(dialect: str) -> Any:
    insert: Any = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect](_TABLE)
    new, old = insert.excluded, _TABLE.c
    newer = new.latest_at >= old.latest_at
    cleaner = new.clean_at.is_not(None) & (old.clean_at.is_(None) | (new.clean_at >= old.clean_at))
    better = new.best_decode_tps.is_not(None) & (
        old.best_decode_tps.is_(None) | (new.best_decode_tps > old.best_decode_tps)
    )
    return insert.on_conflict_do_update(
        index_elements=["key"],
        set_={
            "results": old.results + new.results,
            "latest_id": case((newer, new.latest_id), else_=old.latest_id),
            "latest_at": case((newer, new.latest_at), else_=old.latest_at),
            "clean_id": case((cleaner, new.clean_id), else_=old.clean_id),
            "clean_at": case((cleaner, new.clean_at), else_=old.clean_at),
            "best_id": case((better, new.best_id), else_=old.best_id),
            "best_decode_tps": case((better, new.best_decode_tps), else_=old.best_decode_tps),
        },
    )


def record(connection: Connection, results: Iterable[Mapping[str, Any]]) -> None:
    """Adds stored results to their groups (in the caller's transaction). Results of one
    group are merged first: one statement may not update a row twice on PostgreSQL."""
    merged: dict[str, dict[str, Any]] = {}
    for result in results:
        entry = entry_of(result)
        held = merged.get(entry["key"])
        merged[entry["key"]] = _merge(held, entry) if held else entry
    if merged:
        connection.execute(_upsert(connection.dialect.name), list(merged.values()))


_REBUILD_COLUMNS = (*GROUP_COLUMNS, "id", "created_at", "noisy", "decode_tps")


def rebuild(connection: Connection, batch: int = 2000) -> None:
    """Refills the table from every stored result (a store made before it existed)."""
    connection.execute(delete(_TABLE))
    columns = [_RESULT.c[name] for name in _REBUILD_COLUMNS]
    rows = connection.execution_options(yield_per=batch).execute(
        select(*columns, _PAYLOAD.c.environment_json)
        .join(_PAYLOAD, _PAYLOAD.c.result_id == _RESULT.c.id)
        .order_by(_RESULT.c.created_at)
    )
    for chunk in rows.partitions(batch):
        record(connection, [dict(row._mapping) for row in chunk])


def needs_rebuild(connection: Connection) -> bool:
    """True when results exist but no group does (the table was just added)."""
    groups = connection.execute(select(func.count()).select_from(_TABLE)).scalar_one()
    return groups == 0 and connection.execute(select(_RESULT.c.id).limit(1)).first() is not None
