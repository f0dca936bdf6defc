"""The lease protocol on the database: claims, lease touches (heartbeats and progress),
results, failures and expiry.

Each function works inside the caller's write transaction, so that the coordinator's
writer thread can commit many of them at once (coordinator/writer.py), and refuses
(raises StoreError) before it writes anything. Statements are built once, at import:
building SQLAlchemy expressions per call cost ten times more than running them
(benchmarks/fleet.py, NOTES.md). Every grant, touch and result is a compare-and-set on the
run's state and lease epoch, correct on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import (
    DateTime,
    Integer,
    Select,
    String,
    any_,
    bindparam,
    func,
    insert,
    or_,
    true,
    update,
)
from sqlalchemy import select as select_columns  # sqlmodel's select takes at most 4
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.sql.selectable import TableValuedAlias
from sqlalchemy.types import TypeEngine
from sqlmodel import Session, col, select

from edgebench.coordinator import leaderboard
from edgebench.coordinator.errors import Conflict, StaleLease, StoreError
from edgebench.coordinator.fairshare import Pools, Queued, take
from edgebench.coordinator.selectors import can_run, matches
from edgebench.coordinator.tables import (
    PAYLOAD_COLUMNS,
    Agent,
    Device,
    Job,
    Result,
    ResultPayload,
    Run,
    RunState,
    takes_work,
    utcnow,
)
from edgebench.dashboard.models import DeviceSelector
from edgebench.measure.record import FIELD_NAMES, implausibility

log = logging.getLogger("edgebench.coordinator")
MAX_ATTEMPTS = 3
RETRY_CAP_SECONDS = 60.0
FIRST_LOOK = 4  # queued runs looked at per submitter in a round, beyond one per request
CANDIDATE_SCAN = 50  # and in the second look, for requests none of the first look fits
LIVE = (RunState.LEASED, RunState.RUNNING)
# Result columns beyond the stable fields, with the value a result that lacks them gets.
RESULT_EXTRAS: dict[str, Any] = {
    "engine_version": "",
    "definitions_version": "",
    "source_sha256": "",
    "reps_mode": "fixed",
    "window_s": None,
    "windows_json": "[]",
    "environment_json": "{}",
    "sensors_json": "{}",
}


def retry_delay(attempts: int, base_seconds: float) -> float:
    """Capped exponential backoff with jitter in [0.5, 1.5) of the step, so runs that
    failed together do not all come back at once."""
    step = min(base_seconds * 2.0 ** max(attempts - 1, 0), RETRY_CAP_SECONDS)
    return step * (0.5 + random.random())


@dataclass(frozen=True)
class ClaimRequest:
    agent: Agent
    device: Device
    # The agent's WorkRequest. With one, a lease this request already got is returned
    # again, and any other lease the agent holds is released (it lost it: restarted).
    request_id: str | None = None
    # False once an earlier round did that check for this request (nothing can have
    # changed since: only a round grants it a lease).
    check_held: bool = True
    # Runs whose result or failure from this agent is being written meanwhile: the agent
    # is done with them, so they are not leases it lost.
    finishing: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Claim:
    run: Run
    job: Job


@dataclass(frozen=True)
class LeaseTouch:
    """A heartbeat (phase None) or progress of a run under the lease (run, epoch)."""

    agent_id: str
    run_id: str
    epoch: int
    phase: str | None = None
    rep: int | None = None


@dataclass(frozen=True)
class ResultIn:
    agent_id: str
    result_id: str
    run_id: str
    epoch: int
    values: dict[str, Any]
    timings: bytes


# ---- statements, built once -------------------------------------------------------

# Two equalities, not IN: SQLAlchemy expands an IN list on every execution, and an
# executemany cannot take one.
_live = or_(col(Run.state) == RunState.LEASED, col(Run.state) == RunState.RUNNING)
_queued = col(Run.state) == RunState.QUEUED
_lease_is = (
    (col(Run.id) == bindparam("run"))
    & (col(Run.agent_id) == bindparam("agent"))
    & (col(Run.lease_epoch) == bindparam("epoch"))
    & _live
)
_EXTEND = update(Run).where(_lease_is).values(lease_expires_at=bindparam("until"))
_EXTEND_RUNNING = (
    update(Run)
    .where(_lease_is)
    .values(
        lease_expires_at=bindparam("until"),
        state=RunState.RUNNING,
        phase=bindparam("new_phase"),
        rep=func.coalesce(bindparam("new_rep", type_=Integer), Run.rep),
        started_at=func.coalesce(Run.started_at, bindparam("now", type_=DateTime)),
    )
)
# What a result measured is the run's to say, not the agent's (besides the model, whose
# variant file the agent makes from the run's source model).
RUN_IDENTITY = ("backend", "variant", "n_prompt", "n_gen", "n_depth")
_LEASES_OF = (
    select_columns(
        col(Run.id),
        col(Run.agent_id),
        col(Run.lease_epoch),
        col(Run.state),
        col(Run.job_id),
        col(Run.device_id),
        *(col(getattr(Run, name)) for name in ("model_sha256", *RUN_IDENTITY)),
        col(Run.device_name),
        col(Run.selector_json),
        col(Run.failed_on_device_id),
        col(Run.checks_result_id),
        col(Run.attempts),
    )
    .where(col(Run.id).in_(bindparam("runs", expanding=True)))
    .order_by(col(Run.id))
    .with_for_update()
)
_RESULTS_BY_ID = select(Result.id, Result.payload_sha256, Result.run_id).where(
    col(Result.id).in_(bindparam("results", expanding=True))
)
_INSERT_RESULT = insert(Result)
_INSERT_PAYLOAD = insert(ResultPayload)
_SUCCEED = (
    update(Run)
    .where(col(Run.id) == bindparam("run"))
    .values(
        state=RunState.SUCCEEDED, phase="done", rep=bindparam("reps"), finished_at=bindparam("at")
    )
)
_FAIL = (
    update(Run)
    .where(col(Run.id) == bindparam("run"))
    .values(state=RunState.FAILED, error=bindparam("why"), finished_at=bindparam("at"))
)
# In id order, as every other writer takes its runs (results, touches, releases).
_EXPIRED = (
    select(Run.id, Run.lease_epoch, Run.attempts)
    .where(_live, col(Run.lease_expires_at) < bindparam("now"))
    .order_by(col(Run.id))
)
_unchanged = (
    (col(Run.id) == bindparam("run")) & (col(Run.lease_epoch) == bindparam("epoch")) & _live
)
_REQUEUE = (
    update(Run)
    .where(_unchanged)
    .values(state=RunState.QUEUED, agent_id=None, lease_expires_at=None, phase="",
            error=bindparam("why"), not_before=bindparam("retry_at"))
)  # fmt: skip
_RETRY_ELSEWHERE = (
    update(Run)
    .where(_unchanged)
    .values(state=RunState.QUEUED, agent_id=None, lease_expires_at=None, phase="",
            error=bindparam("why"), not_before=None,
            failed_on_device_id=bindparam("device"))
)  # fmt: skip
_BURY = (
    update(Run)
    .where(_unchanged)
    .values(state=RunState.DEAD, error=bindparam("why"), finished_at=bindparam("at"))
)
_HELD_BY = select(Run.id, Run.agent_id, Run.lease_request_id).where(
    _live, col(Run.agent_id).in_(bindparam("agents", expanding=True))
)
_EXPIRE_AGENTS_LEASES = (
    update(Run)
    .where(col(Run.agent_id) == bindparam("agent"), _live)
    .values(lease_expires_at=bindparam("past"))
)
_EXPIRE_LEASE = (
    update(Run)
    .where(col(Run.id) == bindparam("run"), _live)
    .values(lease_expires_at=bindparam("past"))
)
# devices that take no work (tables.takes_work, said in SQL): not approved, revoked,
# drained or in maintenance, benched as unhealthy, in hardware review, or suspended
_UNHEALTHY = select(Device.id).where(
    or_(
        col(Device.admission) != "approved",
        col(Device.revoked_at).is_not(None),
        col(Device.operator_state) != "active",
        col(Device.unhealthy) != "",
        col(Device.review) != "",
        col(Device.suspended) != "",
    )
)
_FIRST_SUBMITTER = select(func.min(Run.submitter)).where(_queued)
_NEXT_SUBMITTER = select(func.min(Run.submitter)).where(
    _queued, col(Run.submitter) > bindparam("after")
)
_out_of_backoff = or_(col(Run.not_before).is_(None), col(Run.not_before) <= bindparam("now"))
_best_first = (col(Run.priority).desc(), col(Run.created_at))  # the order of ix_run_queue
# what a claim reads of a queued run: the fields of fairshare.Queued, in order
_QUEUED_COLUMNS = (col(Run.priority), col(Run.id), col(Run.created_at), col(Run.device_name),
                   col(Run.selector_json), col(Run.backend),
                   col(Run.failed_on_device_id))  # fmt: skip
_POOL = (
    select_columns(*_QUEUED_COLUMNS)
    .where(_queued, col(Run.submitter) == bindparam("submitter"), _out_of_backoff)
    .order_by(*_best_first)
    .limit(bindparam("size"))
)
_IN_FLIGHT = select(Run.submitter, func.count()).where(_live).group_by(col(Run.submitter))


def _pools_in_one_statement() -> Select[Any]:
    """PostgreSQL: every submitter's pool in one statement (the walk of submitters and a
    pool each were a network round trip each, most of a round's time:
    benchmarks/fleet.py). The walk is a recursive CTE stepping through ix_run_queue like
    `_queued_submitters`; each pool is a LATERAL scan of the index in its order, like
    `_POOL`."""
    first = select_columns(func.min(Run.submitter).label("name")).where(_queued)
    walk = first.cte("walk", recursive=True)
    following = (
        select_columns(func.min(Run.submitter))
        .where(_queued, col(Run.submitter) > walk.c.name)
        .scalar_subquery()
    )
    walk = walk.union_all(select_columns(following).where(walk.c.name.is_not(None)))
    pooled = (
        select_columns(*_QUEUED_COLUMNS)
        .where(_queued, col(Run.submitter) == walk.c.name, _out_of_backoff)
        .order_by(*_best_first)
        .limit(bindparam("size"))
        .lateral("pooled")
    )
    return (
        select_columns(walk.c.name, pooled)
        .select_from(walk.join(pooled, true()))
        .where(walk.c.name.is_not(None))
    )


_POOLS = _pools_in_one_statement()


def _unnested(name: str, **columns: type[TypeEngine[Any]]) -> TableValuedAlias:
    """PostgreSQL: parallel array parameters (one named like each column, plus "s") as
    a table with those columns, one row per element."""
    arrays = [bindparam(f"{column}s", type_=ARRAY(kind)) for column, kind in columns.items()]
    return func.unnest(*arrays).table_valued(*columns).render_derived(name=name)


def _granted(agent: Any, device: Any, request: Any) -> dict[str, Any]:
    """What a grant writes: the next epoch, the deadline, the holder, one more attempt."""
    return {"state": RunState.LEASED, "lease_epoch": Run.lease_epoch + 1,
            "lease_expires_at": bindparam("until"), "agent_id": agent, "device_id": device,
            "attempts": Run.attempts + 1, "lease_request_id": request, "phase": "leased",
            "rep": 0}  # fmt: skip


# SQLite: a grant a statement (in-process, cheap; one writer holds the whole database).
_GRANT = (
    update(Run)
    .where(col(Run.id) == bindparam("run"), _queued)
    .values(_granted(bindparam("agent"), bindparam("device"), bindparam("request")))
)
# PostgreSQL: all of a round's grants in one statement over arrays (a statement per grant
# was a network round trip each, and the round's main cost: benchmarks/fleet.py).
_planned = _unnested("planned", run=String, agent=String, device=String, request=String)
_unlocked_many = (
    select_columns(col(Run.id))
    .where(col(Run.id).in_(select_columns(_planned.c.run)), _queued)
    .with_for_update(skip_locked=True)
)
_GRANT_MANY = (
    update(Run)
    .where(col(Run.id) == _planned.c.run, col(Run.id).in_(_unlocked_many), _queued)
    .values(_granted(_planned.c.agent, _planned.c.device, _planned.c.request))
    .returning(col(Run.id))
)
# PostgreSQL: a flush of lease touches in one statement per kind, over arrays; the rows
# it returns are the leases still current.
_touched = _unnested("touched", run=String, agent=String, epoch=Integer, phase=String,
                     rep=Integer)  # fmt: skip
_touch_is = (
    (col(Run.id) == _touched.c.run)
    & (col(Run.agent_id) == _touched.c.agent)
    & (col(Run.lease_epoch) == _touched.c.epoch)
    & _live
)
_LOCK_IN_ID_ORDER = (
    select_columns(col(Run.id))
    .where(col(Run.id) == any_(bindparam("runs", type_=ARRAY(String))))
    .order_by(col(Run.id))
    .with_for_update()
)
_EXTEND_MANY = (
    update(Run)
    .where(_touch_is)
    .values(lease_expires_at=bindparam("until"))
    .returning(col(Run.id), col(Run.agent_id), col(Run.lease_epoch))
)
_EXTEND_RUNNING_MANY = (
    update(Run)
    .where(_touch_is)
    .values(
        lease_expires_at=bindparam("until"),
        state=RunState.RUNNING,
        phase=_touched.c.phase,
        rep=func.coalesce(_touched.c.rep, Run.rep),
        started_at=func.coalesce(Run.started_at, bindparam("now", type_=DateTime)),
    )
    .returning(col(Run.id), col(Run.agent_id), col(Run.lease_epoch))
)
# populate_existing: a run read earlier in the same batch must not come back stale
_CLAIMED = (
    select(Run, Job)
    .join(Job, col(Run.job_id) == col(Job.id))
    .where(col(Run.id).in_(bindparam("ids", expanding=True)))
    .execution_options(populate_existing=True)
)
_AGENT_SEEN = (
    update(Agent).where(col(Agent.id) == bindparam("agent")).values(last_seen_at=bindparam("at"))
)
_DEVICE_SEEN = (
    update(Device).where(col(Device.id) == bindparam("device")).values(last_seen_at=bindparam("at"))
)


def _connection(s: Session) -> Connection:
    return s.connection()


# ---- lease touches, results, failures ---------------------------------------------


def touch_leases(s: Session, touches: Sequence[LeaseTouch], lease_seconds: int) -> list[bool]:
    """Heartbeats and progress: each extends its lease if the lease is still current.
    Returns, per touch, whether it was (a stale one means: tell the agent to stop). One
    compare-and-set statement per kind (heartbeat, progress), however many touches: how,
    is the dialect's (`_Sqlite.touch`, `_Postgres.touch`)."""
    if not touches:
        return []
    connection = _connection(s)
    now = utcnow()
    return _dialect(connection).touch(
        connection, touches, now, now + timedelta(seconds=lease_seconds)
    )


def _touch_rows(
    connection: Connection, touches: Sequence[LeaseTouch], now: datetime, until: datetime
) -> list[bool]:
    """touch_leases on SQLite: an executemany per kind, and only when some matched no row
    are the leases read, to tell which."""
    ordered = sorted(touches, key=lambda t: t.run_id)
    leases = [{"run": t.run_id, "agent": t.agent_id, "epoch": t.epoch, "until": until,
               "new_phase": t.phase, "new_rep": t.rep, "now": now} for t in ordered]  # fmt: skip
    beats = [lease for lease in leases if lease["new_phase"] is None]
    progress = [lease for lease in leases if lease["new_phase"] is not None]
    changed = 0
    if beats:
        changed += connection.execute(_EXTEND, beats).rowcount
    if progress:
        changed += connection.execute(_EXTEND_RUNNING, progress).rowcount
    if changed == len(touches) and connection.dialect.supports_sane_multi_rowcount:
        return [True] * len(touches)
    current = _leases_of(connection, {touch.run_id for touch in touches})
    return [_holds(current.get(t.run_id), t.agent_id, t.epoch) for t in touches]


def _touch_in_arrays(
    connection: Connection, touches: Sequence[LeaseTouch], now: datetime, until: datetime
) -> list[bool]:
    """touch_leases on PostgreSQL: a statement per kind, not a row each (executemany
    sends every row on its own: 2,000 heartbeats took 0.3-0.5 s, benchmarks/fleet.py)."""
    # Two statements would each lock as they update, the second's runs after the first's
    # whatever their ids; a results batch locks in id order, and the two could then wait
    # on each other (test_store: a touch waits for its runs in id order).
    connection.execute(_LOCK_IN_ID_ORDER, {"runs": sorted({t.run_id for t in touches})})
    current: set[tuple[str, str | None, int]] = set()
    for kind in (_EXTEND_MANY, _EXTEND_RUNNING_MANY):
        running = kind is _EXTEND_RUNNING_MANY
        mine = sorted((t for t in touches if (t.phase is not None) == running),
                      key=lambda t: t.run_id)  # fmt: skip
        if mine:
            arrays = {"runs": [t.run_id for t in mine], "agents": [t.agent_id for t in mine],
                      "epochs": [t.epoch for t in mine], "phases": [t.phase for t in mine],
                      "reps": [t.rep for t in mine], "until": until, "now": now}  # fmt: skip
            rows = connection.execute(kind, arrays)
            current.update((row[0], row[1], row[2]) for row in rows)
    return [(t.run_id, t.agent_id, t.epoch) in current for t in touches]


def _leases_of(connection: Connection, run_ids: set[str]) -> dict[str, Any]:
    """The lease columns of these runs, locked to the end of the transaction on
    PostgreSQL (in id order, so that two coordinators never wait on each other in a
    circle); SQLite's writer already holds the whole database."""
    rows = connection.execute(_LEASES_OF, {"runs": sorted(run_ids)}).all()
    return {row.id: row for row in rows}


def payload_sha256(values: dict[str, Any], timings: bytes) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode() + timings).hexdigest()


def store_results(s: Session, items: Sequence[ResultIn]) -> list[StoreError | None]:
    """Stores results and marks their runs succeeded, all rows in one executemany. Per
    item: None when stored (or already stored: the same result id again is the same
    result), else why it was refused (Conflict, StaleLease, StoreError)."""
    connection = _connection(s)
    leases = _leases_of(connection, {item.run_id for item in items})
    leases_before = dict(leases)  # (stored runs' entries are cleared below)
    ids = sorted({item.result_id for item in items})
    known: dict[str, Any] = {
        row.id: row for row in connection.execute(_RESULTS_BY_ID, {"results": ids})
    }
    now = utcnow()
    contributors = _contributors(connection, leases.values())
    rows: list[dict[str, Any]] = []
    outcomes: list[StoreError | None] = []
    for item in items:
        try:
            row = _result_row(item, leases.get(item.run_id), known, now, contributors)
        except StoreError as exc:
            outcomes.append(exc)
            continue
        outcomes.append(None)
        if row is not None:
            rows.append(row)
            known[item.result_id] = _Known(item.result_id, row["payload_sha256"], item.run_id)
            leases[item.run_id] = None  # finished: another result for it is stale
    if rows:
        connection.execute(_INSERT_RESULT, [_without_payload(row) for row in rows])
        connection.execute(_INSERT_PAYLOAD, [_payload(row) for row in rows])
        leaderboard.record(connection, rows)
        _record_outcomes(connection, _outcomes_of(rows, leases_before))
        finished = [{"run": r["run_id"], "reps": int(r["reps"]), "at": now} for r in rows]
        connection.execute(_SUCCEED, finished)
    return outcomes


def _without_payload(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key not in PAYLOAD_COLUMNS}


def _payload(row: dict[str, Any]) -> dict[str, Any]:
    return {"result_id": row["id"], **{name: row[name] for name in PAYLOAD_COLUMNS}}


@dataclass(frozen=True)
class _Known:
    id: str
    payload_sha256: str
    run_id: str


def _outcomes_of(rows: list[dict[str, Any]], leases: dict[str, Any]) -> list[tuple[str, str]]:
    """Per stored result: a success for its device, and a failure for the device the run
    first failed on (another device has now measured it: that failure was the device's)."""
    outcomes = []
    for row in rows:
        failed_on = leases[row["run_id"]].failed_on_device_id
        if failed_on is not None:
            outcomes.append((failed_on, "F"))
        outcomes.append((row["device_id"], "S"))
    return outcomes


def _contributors(connection: Connection, leases: Any) -> set[str]:
    """Which of these runs' devices are contributors (their results start unverified)."""
    ids = sorted({lease.device_id for lease in leases if lease is not None and lease.device_id})
    return set(connection.execute(_CONTRIBUTORS, {"devices": ids}).scalars()) if ids else set()


_CONTRIBUTORS = select(Device.id).where(
    col(Device.id).in_(bindparam("devices", expanding=True)), col(Device.contributor)
)


def _verification(lease: Any, contributor: bool) -> dict[str, Any]:
    """Where a new result starts (coordinator/verification.py takes it from there)."""
    if lease.checks_result_id is not None:  # a replication run: judged with its original
        return {"verification": "unverified" if contributor else "trusted",
                "verification_note": f"replicates result {lease.checks_result_id}",
                "replica_run_id": ""}  # fmt: skip
    if contributor:
        return {"verification": "unverified", "verification_note": "", "replica_run_id": None}
    return {"verification": "trusted", "verification_note": "", "replica_run_id": ""}


def _result_row(
    item: ResultIn, lease: Any, known: dict[str, Any], now: datetime, contributors: set[str]
) -> Any:
    """The row to insert, None for a replay of a stored result; raises when refused."""
    payload = payload_sha256(item.values, item.timings)
    existing = known.get(item.result_id)
    if existing is not None:
        if existing.payload_sha256 != payload or existing.run_id != item.run_id:
            raise Conflict(f"result {item.result_id} was already stored with other content")
        return None
    problem = implausibility(item.values)
    if problem:
        raise StoreError(f"implausible result: {problem}")
    if not _holds(lease, item.agent_id, item.epoch):
        raise StaleLease(
            f"the lease on run {item.run_id} (epoch {item.epoch}) is no longer current"
        )
    mismatch = _not_of_its_run(item.values, lease)
    if mismatch:
        raise StoreError(f"the result does not answer its run: {mismatch}")
    row = {name: item.values[name] for name in FIELD_NAMES}
    row.update({name: item.values.get(name, default) for name, default in RESULT_EXTRAS.items()})
    row.update(id=item.result_id, run_id=item.run_id, job_id=lease.job_id,
               device_id=lease.device_id, payload_sha256=payload, created_at=now,
               timings=item.timings)  # fmt: skip
    row.update(_verification(lease, lease.device_id in contributors))
    return row


def _not_of_its_run(values: dict[str, Any], run: Any) -> str | None:
    """Which identity field names something other than the run asked for, or None. A
    run without a variant measures the model as uploaded, whatever the engine calls it."""
    source = values.get("source_sha256") or values["model_sha256"]
    if source != run.model_sha256:
        return f"model {source[:12]} is not the run's {run.model_sha256[:12]}"
    for name in RUN_IDENTITY:
        asked, said = getattr(run, name), values[name]
        if name == "variant" and (not asked or str(said).upper() == asked.upper()):
            continue
        if said != asked:
            return f"{name} {said!r} is not the run's {asked!r}"
    return None


FAILURE_KINDS = ("device", "workload", "unhealthy")  # RunFailure.kind ("" = device)


def fail_run(
    s: Session, *, agent_id: str, run_id: str, epoch: int, error: str, kind: str = "device"
) -> bool:
    """The agent reports that the run failed; applied only under its current lease. A
    first failure is retried once on another healthy device that may take the run, when
    one is enrolled: one broken or hostile agent cannot fail the queue. A second failure,
    one no other device could retry, one on the run's last attempt, or a `workload`
    failure (no device could do the run as asked) from an operator device is final; a
    contributor's word on that is not taken.
    `unhealthy`: the agent says its device cannot work (a full disk); it is benched until
    `devices resume` (an agent can only bench its own device, so its word is taken)."""
    connection = _connection(s)
    lease = _leases_of(connection, {run_id}).get(run_id)
    if not _holds(lease, agent_id, epoch):
        return False
    assert lease is not None
    failed_on = s.get(Device, lease.device_id)
    if kind == "unhealthy" and failed_on is not None and not failed_on.unhealthy:
        failed_on.unhealthy = f"its agent reported: {error[:500]}"
        s.add(failed_on)
    if kind == "workload" and failed_on is not None and not failed_on.contributor:
        why = f"workload failure (no device could run it as asked): {error[:1900]}"
        connection.execute(_FAIL, {"run": run_id, "why": why, "at": utcnow()})
        return True
    retriable = lease.failed_on_device_id is None and lease.attempts < MAX_ATTEMPTS
    if retriable and failed_on and _another_could_take(s, lease):
        why = f"failed on {failed_on.name}: {error[:1800]} (retried on another device)"
        lease_of = {"run": run_id, "epoch": epoch, "why": why, "device": lease.device_id}
        connection.execute(_RETRY_ELSEWHERE, lease_of)
        return True
    connection.execute(_FAIL, {"run": run_id, "why": error[:2000], "at": utcnow()})
    return True


def _another_could_take(s: Session, run: Any) -> bool:
    queued = Queued(0, run.id, utcnow(), run.device_name, run.selector_json, run.backend,
                    failed_on_device_id=run.device_id)  # fmt: skip
    others = s.exec(select(Device).where(col(Device.id) != run.device_id))
    return any(takes_work(device) and _fits(device)(queued) for device in others)


# A device with this many failures (each finished by another device) among its last
# HEALTH_WINDOW outcomes takes no work until `devices resume`.
HEALTH_WINDOW, UNHEALTHY_FAILURES = 10, 3


def _record_outcomes(connection: Connection, finished: list[tuple[str, str]]) -> None:
    """(device id, "S" or "F") per outcome, oldest first: each device's history gains
    them, and one that reaches UNHEALTHY_FAILURES failures is marked unhealthy."""
    ids = sorted({device for device, _ in finished})
    # locked in id order, as runs are: two coordinators never wait on each other in a
    # circle, nor overwrite each other's outcome (PostgreSQL; SQLite holds the database)
    rows = connection.execute(
        select(Device.id, Device.outcomes, Device.unhealthy)
        .where(col(Device.id).in_(ids))
        .order_by(col(Device.id))
        .with_for_update()
    ).all()
    history = {row.id: (row.outcomes, row.unhealthy) for row in rows}
    for device, outcome in finished:
        if device in history:
            outcomes, unhealthy = history[device]
            outcomes = (outcome + outcomes)[:HEALTH_WINDOW]
            if not unhealthy and outcomes.count("F") >= UNHEALTHY_FAILURES:
                unhealthy = (
                    f"{outcomes.count('F')} of its last {len(outcomes)} runs failed here and "
                    "succeeded on another device"
                )
            history[device] = (outcomes, unhealthy)
    updates = [
        {"device": d, "outcomes": o, "unhealthy": u} for d, (o, u) in sorted(history.items())
    ]
    if updates:
        connection.execute(_OUTCOMES, updates)


_OUTCOMES = (
    update(Device)
    .where(col(Device.id) == bindparam("device"))
    .values(outcomes=bindparam("outcomes"), unhealthy=bindparam("unhealthy"))
)


def _holds(lease: Any, agent_id: str, epoch: int) -> bool:
    return (
        lease is not None
        and lease.agent_id == agent_id
        and lease.lease_epoch == epoch
        and lease.state in LIVE
    )


# ---- expiry ------------------------------------------------------------------------


def reap_expired(s: Session, retry_base_seconds: float) -> int:
    """Puts runs whose lease ran out back in the queue after a capped exponential backoff
    with jitter, or marks them dead after the last attempt. Each change is a
    compare-and-set on the lease epoch, so a heartbeat that lands meanwhile wins.
    Returns how many runs it changed."""
    connection = _connection(s)
    now = utcnow()
    touched = 0
    for run_id, epoch, attempts in connection.execute(_EXPIRED, {"now": now}).all():
        lease = {"run": run_id, "epoch": epoch,
                 "why": f"lease expired on attempt {attempts} of {MAX_ATTEMPTS}"}  # fmt: skip
        if attempts >= MAX_ATTEMPTS:
            changed = connection.execute(_BURY, {**lease, "at": now})
        else:
            retry_at = now + timedelta(seconds=retry_delay(attempts, retry_base_seconds))
            changed = connection.execute(_REQUEUE, {**lease, "retry_at": retry_at})
        touched += changed.rowcount
    return touched


def release_leases(s: Session, agent_ids: Sequence[str], retry_base_seconds: float) -> int:
    """These agents asked for new work, so any lease they still hold was lost on their
    side (they restarted): the leases expire now and are requeued as any expiry."""
    targets = [{"agent": agent} for agent in agent_ids]
    return _expire_now(s, _EXPIRE_AGENTS_LEASES, targets, retry_base_seconds)


def _expire_now(
    s: Session, statement: Any, targets: list[dict[str, str]], retry_base_seconds: float
) -> int:
    """Expires the leases each target names (a statement each: rare) and requeues them
    as any expiry. Returns how many leases expired."""
    past = utcnow() - timedelta(seconds=1)
    connection = _connection(s)
    released = sum(
        connection.execute(statement, {**target, "past": past}).rowcount for target in targets
    )
    if released:
        reap_expired(s, retry_base_seconds)
    return released


def heard_from(s: Session, seen: dict[str, tuple[str, datetime]]) -> None:
    """Heartbeats: {agent id: (device id, when)} seen since the last call, in two
    executemany statements."""
    if not seen:
        return
    connection = _connection(s)
    connection.execute(_AGENT_SEEN, [{"agent": a, "at": at} for a, (_, at) in seen.items()])
    connection.execute(_DEVICE_SEEN, [{"device": d, "at": at} for d, at in seen.values()])


# ---- claims ------------------------------------------------------------------------


def _fits(device: Device) -> Callable[[Queued], bool]:
    """Whether a queued run may go to this device: its pin, its engine, its selector."""

    def fits(run: Queued) -> bool:
        if run.device_name is not None and run.device_name != device.name:
            return False
        if run.failed_on_device_id == device.id:
            return False
        if not can_run(device, run.backend):
            return False
        return run.selector_json == "{}" or matches(_selector(run.selector_json), device)

    return fits


@functools.lru_cache(maxsize=1024)
def _selector(text: str) -> DeviceSelector:
    return DeviceSelector.model_validate_json(text)


@dataclass
class InFlightCounts:
    """Runs in flight per submitter, as fair share weighs them: counted in the database
    at most once every `refresh_seconds`, plus the grants made through this object since.
    Counting live runs reads every one of them (2,000 rows, ~10 ms a round on PostgreSQL
    with a 2,000-agent fleet: benchmarks/fleet.py), so a dispatcher counts once a second;
    a run that finished since still counts until the next count."""

    refresh_seconds: float = 1.0
    counts: dict[str, int] = field(default_factory=dict)
    counted_at: float = -math.inf

    def current(self, connection: Connection) -> dict[str, int]:
        """The counts, to be read and added to (each grant adds one)."""
        now = time.monotonic()
        if now - self.counted_at >= self.refresh_seconds:
            self.counts = dict(connection.execute(_IN_FLIGHT).all())
            self.counted_at = now
        return self.counts


def claim_runs(
    s: Session,
    requests: Sequence[ClaimRequest],
    lease_seconds: int,
    retry_base_seconds: float,
    in_flight: InFlightCounts | None = None,
) -> list[Claim | None]:
    """One dispatch round: a claim or None per request.

    A request whose id already got a lease gets that lease again (its answer was lost on
    the wire); other leases of an agent asking with a new id are released. Then each
    remaining request is leased the best queued run its device may take: highest
    priority first; within it, the submitter with the fewest runs in flight (fair share:
    one huge matrix cannot starve others, and leases granted in this round count); then
    the oldest run. On PostgreSQL the chosen row is locked FOR UPDATE SKIP LOCKED, so
    coordinators sharing the database pass over each other's picks. Without `in_flight`
    the runs in flight are counted afresh."""
    asks = [(r.agent.id, r.request_id if r.check_held else None) for r in requests]
    finishing = frozenset().union(*(r.finishing for r in requests))
    granted, _ = answer_requests(s, asks, retry_base_seconds, finishing)
    connection = _connection(s)
    now = utcnow()
    benched = set(connection.execute(_UNHEALTHY).scalars())
    asking = [
        i
        for i in range(len(requests))
        if granted[i] is None and requests[i].device.id not in benched
    ]
    counts: dict[str, int] | None = None
    # A first look at a few runs per submitter serves most rounds; only requests that
    # none of those fit make a second, deeper look (device selectors).
    for depth in (FIRST_LOOK, CANDIDATE_SCAN):
        if not asking:
            break
        pools = _pools(connection, now, depth + len(asking))
        if not pools:
            break
        if counts is None:  # later looks keep counting this round's grants
            counts = (in_flight or InFlightCounts(refresh_seconds=0)).current(connection)
        shallow = all(len(pool) < depth + len(asking) for pool in pools.values())
        until = now + timedelta(seconds=lease_seconds)
        asking = _lease_all(connection, requests, asking, pools, counts, granted, until)
        if shallow:
            break  # the first look saw every queued run already
    return claims_of(s, granted)


def _lease_all(
    connection: Connection,
    requests: Sequence[ClaimRequest],
    asking: list[int],
    pools: Pools,
    in_flight: dict[str, int],
    granted: list[str | None],
    until: datetime,
) -> list[int]:
    """Grants each asking request (by index) the best pooled run its device may take, all
    in one write; a run another coordinator took meanwhile sends its request to its next
    best. Returns the requests no pooled run fits."""
    unfit: list[int] = []
    submitter_of = {row.run_id: name for name, pool in pools.items() for row in pool}
    while asking:
        planned: dict[str, tuple[int, str]] = {}  # run id: (request index, submitter)
        for index in asking:
            row = take(pools, in_flight, _fits(requests[index].device))
            if row is None:
                unfit.append(index)
                continue
            planned[row.run_id] = (index, submitter_of[row.run_id])
        won = _grant_all(connection, {run: requests[i] for run, (i, _) in planned.items()}, until)
        asking = []
        for run_id, (index, submitter) in planned.items():
            if run_id in won:
                granted[index] = run_id
            else:
                in_flight[submitter] -= 1
                asking.append(index)
    return sorted(unfit)


def answer_requests(
    s: Session,
    asks: Sequence[tuple[str, str | None]],
    retry_base_seconds: float,
    finishing: frozenset[str] = frozenset(),
) -> tuple[list[str | None], int]:
    """Per (agent id, request id): the run this request already holds a lease on, or None;
    leases the agent holds under any other request id are released (it lost them), but
    not the `finishing` runs, whose results are being written. Requests without an id are
    left alone. Returns the answers and how many leases were released."""
    asked = {agent: request for agent, request in asks if request is not None}
    if not asked:
        return [None] * len(asks), 0
    held = [row for row in _connection(s).execute(_HELD_BY, {"agents": sorted(asked)})
            if row[0] not in finishing]  # fmt: skip
    same = {agent: run_id for run_id, agent, request in held if request == asked[agent]}
    lost = sorted(run_id for run_id, agent, request in held
                  if request != asked[agent] and agent not in same)  # fmt: skip
    targets = [{"run": run_id} for run_id in lost]
    released = _expire_now(s, _EXPIRE_LEASE, targets, retry_base_seconds) if lost else 0
    if released:
        agents = {agent for run_id, agent, _ in held if run_id in lost}
        log.warning("%d agent(s) asked for work while holding %d run(s): requeued",
                    len(agents), released)  # fmt: skip
    answers = [same.get(agent) if request is not None else None for agent, request in asks]
    return answers, released


def _grant_all(connection: Connection, plan: dict[str, ClaimRequest], until: datetime) -> set[str]:
    """Leases each planned run to its request if it is still queued (and, on PostgreSQL,
    not locked by another coordinator); returns the runs granted."""
    return _dialect(connection).grant(connection, plan, until) if plan else set()


def _grant_in_arrays(
    connection: Connection, plan: dict[str, ClaimRequest], until: datetime
) -> set[str]:
    ordered = sorted(plan)
    arrays = {"runs": ordered, "agents": [plan[r].agent.id for r in ordered],
              "devices": [plan[r].device.id for r in ordered],
              "requests": [plan[r].request_id for r in ordered], "until": until}  # fmt: skip
    return set(connection.execute(_GRANT_MANY, arrays).scalars())


def _grant_rows(connection: Connection, plan: dict[str, ClaimRequest], until: datetime) -> set[str]:
    return {
        run_id for run_id, request in plan.items() if _grant(connection, run_id, request, until)
    }


def _grant(connection: Connection, run_id: str, request: ClaimRequest, until: datetime) -> bool:
    grant = {"run": run_id, "until": until, "agent": request.agent.id,
             "device": request.device.id, "request": request.request_id}  # fmt: skip
    return bool(connection.execute(_GRANT, grant).rowcount == 1)


def _pools(connection: Connection, now: datetime, size: int) -> Pools:
    """Up to `size` queued runs out of backoff per submitter, best first (highest
    priority, then oldest). Reading the index in its order, the cost does not grow with
    the length of the queue (benchmarks/fleet.py)."""
    return _dialect(connection).pools(connection, now, size)


def _pools_in_one_read(connection: Connection, now: datetime, size: int) -> Pools:
    pools: Pools = {}
    for name, *row in connection.execute(_POOLS, {"now": now, "size": size}):
        pools.setdefault(name, []).append(Queued(*row))
    return pools


def _pools_by_submitter(connection: Connection, now: datetime, size: int) -> Pools:
    pools: Pools = {}
    for submitter in _queued_submitters(connection):
        query = {"submitter": submitter, "now": now, "size": size}
        pools[submitter] = [Queued(*row) for row in connection.execute(_POOL, query)]
    return pools


def _queued_submitters(connection: Connection) -> list[str]:
    """Walks ix_run_queue: min(submitter) > the last one found, one step each."""
    found: list[str] = []
    following = connection.execute(_FIRST_SUBMITTER).scalar()
    while following is not None:
        found.append(following)
        following = connection.execute(_NEXT_SUBMITTER, {"after": following}).scalar()
    return found


def claims_of(s: Session, granted: list[str | None]) -> list[Claim | None]:
    """The leased runs (read fresh) and their jobs, in the order given."""
    ids = [run_id for run_id in granted if run_id is not None]
    if not ids:
        return [None] * len(granted)
    claims = {run.id: Claim(run, job) for run, job in s.exec(_CLAIMED, params={"ids": ids})}
    return [None if run_id is None else claims[run_id] for run_id in granted]


class _Statements(Protocol):
    """What differs between databases: how touches, grants and pools are written."""

    def touch(
        self, connection: Connection, touches: Sequence[LeaseTouch], now: datetime,
        until: datetime,
    ) -> list[bool]: ...  # fmt: skip

    def grant(
        self, connection: Connection, plan: dict[str, ClaimRequest], until: datetime
    ) -> set[str]: ...

    def pools(self, connection: Connection, now: datetime, size: int) -> Pools: ...


class _Sqlite:
    """One writer at a time, in process: a statement per row or step costs little."""

    touch = staticmethod(_touch_rows)
    grant = staticmethod(_grant_rows)
    pools = staticmethod(_pools_by_submitter)


class _Postgres:
    """A network round trip per statement, several coordinators at once: statements over
    arrays, rows locked in id order, grants that skip rows another coordinator holds."""

    touch = staticmethod(_touch_in_arrays)
    grant = staticmethod(_grant_in_arrays)
    pools = staticmethod(_pools_in_one_read)


_DIALECTS: dict[str, _Statements] = {"sqlite": _Sqlite(), "postgresql": _Postgres()}


def _dialect(connection: Connection) -> _Statements:
    try:
        return _DIALECTS[connection.dialect.name]
    except KeyError:
        raise StoreError(
            f"edgebench stores runs in SQLite or PostgreSQL, not {connection.dialect.name}"
        ) from None
