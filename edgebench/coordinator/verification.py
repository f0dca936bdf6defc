"""Contributor results are checked by the coordinator, not taken on the agent's word.

A result from a contributor device starts `unverified`. A verification round (the
coordinator's reaper runs one every few seconds, in its housekeeping writer):

1. judges finished replication runs: the original and its replica agree when every
   compared figure differs by at most max(`band` of the trusted figure, the combined 95%
   intervals); the original becomes `verified` (the replica ran on an operator device) or
   `verified-by-quorum` (on a contributor of another owner: both results are marked), else
   `disputed` with both figures in its note;
2. checks new results for plausibility beyond the wire's recomputation: energy against
   average power times the measured phases' duration, and decode speed against the best
   trusted result of the hardware class for a model that does not fit in the cache. A
   failure is `quarantined` with the reason (it counts as a dispute);
3. queues a replication run for each remaining one: the same test (model, variant,
   backend, sizes and the job's settings) pinned by selector to the hardware class and
   engine build of the device that measured it, on an operator device, or where the fleet
   has none of that class, on a contributor of another owner. Replication runs go out at
   the lowest priority, and at most a `share` of the fleet's trusted devices' worth are
   queued or running at once; once a contributor has `enough_verified` results, one in
   `sample_every` of its later results is replicated.

A contributor with `suspend_disputes` disputes among its last `window` checks is suspended
(takes no work until `devices resume`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from edgebench.coordinator.tables import (
    LEADERBOARD,
    Device,
    Job,
    Result,
    ResultPayload,
    Run,
    RunState,
    capabilities_of,
    identity_of,
    new_id,
    takes_work,
    trust_tier,
)
from edgebench.dashboard.models import DeviceSelector, JobCreate
from edgebench.measure.packing import unpack_reps
from edgebench.workload import TestMatrix

SUBMITTER = "verification"  # whose runs replication runs are, in job lists
PRIORITY = -100  # the lowest a job may have: replication waits for every other job
COMPARED = ("decode_tps", "prefill_tps")  # each with its `_ci95`
SCAN = 200  # new results looked at per round
_FINAL = (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.DEAD)
_LIVE = (RunState.QUEUED, RunState.LEASED, RunState.RUNNING)


@dataclass(frozen=True)
class VerifyPolicy:
    band: float = 0.05  # agreement: within this share of the trusted figure, at least
    share: float = 0.1  # replication runs queued or running: this share of trusted devices
    enough_verified: int = 5  # verified results after which a contributor is sampled
    sample_every: int = 4  # then one in this many of its results is replicated
    energy_tolerance: float = 0.10  # energy against power x duration
    min_energy_seconds: float = 1.0  # shorter phases: energy is interpolated, not checked
    fast_factor: float = 3.0  # decode above this x the class's best trusted is absurd
    cache_multiple: float = 4.0  # ... when the model is this many times the LLC or more
    window: int = 10  # checks a device's standing is judged on
    suspend_disputes: int = 3  # disputes within the window that suspend a contributor


@dataclass
class Round:
    """What one verification round did, by result id."""

    judged: dict[str, str] = field(default_factory=dict)  # -> new verification state
    quarantined: list[str] = field(default_factory=list)
    replicated: list[str] = field(default_factory=list)  # a replication run was queued
    suspended: list[str] = field(default_factory=list)  # device names


def verify(s: Session, policy: VerifyPolicy) -> Round:
    done = Round()
    _judge_replicas(s, policy, done)
    _check_new(s, policy, done)
    return done


# ---- judging ------------------------------------------------------------------------


def _judge_replicas(s: Session, policy: VerifyPolicy, done: Round) -> None:
    pending = s.exec(
        select(Result, Run)
        .join(Run, col(Run.id) == col(Result.replica_run_id))
        .where(col(Result.verification) == "unverified", col(Run.state).in_(_FINAL))
    ).all()
    for original, run in pending:
        replica = s.exec(select(Result).where(col(Result.run_id) == run.id)).first()
        if run.state != RunState.SUCCEEDED or replica is None:
            original.replica_run_id = ""  # not replicated again: a person can look
            original.verification_note = (
                f"its replication run {run.id[:8]} ended {run.state.value}: "
                f"{run.error[:300] or 'no result'}; not replicated again"
            )
            s.add(original)
            continue
        _judge(s, policy, original, replica, done)


def _judge(
    s: Session, policy: VerifyPolicy, original: Result, replica: Result, done: Round
) -> None:
    checker = s.get(Device, replica.device_id)
    by_quorum = replica.verification != "trusted"
    where = f"{checker.name if checker else '?'} ({trust_tier(checker) if checker else '?'})"
    differs = disagreement(original, replica, policy.band)
    if differs is None:
        state = "verified-by-quorum" if by_quorum else "verified"
        note = f"agrees with result {replica.id[:8]} on {where}: {comparison(original, replica)}"
    else:
        state = "disputed"
        note = f"disagrees with result {replica.id[:8]} on {where}: {differs}"
    _mark(s, original, state, note)
    done.judged[original.id] = state
    _record_check(s, policy, original.device_id, state != "disputed", done)
    if by_quorum:
        back = f"checked result {original.id[:8]}: " + (differs or comparison(replica, original))
        _mark(s, replica, state, back)
        done.judged[replica.id] = state
        _record_check(s, policy, replica.device_id, state != "disputed", done)


def disagreement(original: Result, replica: Result, band: float) -> str | None:
    """Why two results of one test do not agree, or None. The replica's figure is the
    reference; each compared figure may differ by max(band x it, the combined 95%
    intervals)."""
    if original.model_sha256 != replica.model_sha256:
        return (
            f"the variant files differ ({original.model_sha256[:12]} against "
            f"{replica.model_sha256[:12]}): not the same test"
        )
    for name in COMPARED:
        mine, theirs = getattr(original, name), getattr(replica, name)
        ci = math.hypot(getattr(original, f"{name}_ci95"), getattr(replica, f"{name}_ci95"))
        allowed = max(band * theirs, ci)
        if abs(mine - theirs) > allowed:
            return (
                f"{_figure(name, original)} against {_figure(name, replica)}: "
                f"{abs(mine - theirs):.4g} apart, more than max({band:.0%}, the combined "
                f"95% intervals) = {allowed:.4g}"
            )
    return None


def comparison(original: Result, replica: Result) -> str:
    return "; ".join(
        f"{_figure(name, original)} against {_figure(name, replica)}" for name in COMPARED
    )


def _figure(name: str, result: Result) -> str:
    return f"{name} {getattr(result, name):.4g} ± {getattr(result, f'{name}_ci95'):.2g}"


def _mark(s: Session, result: Result, state: str, note: str) -> None:
    result.verification = state
    result.verification_note = note[:2000]
    s.add(result)
    s.flush()
    s.connection().execute(
        update(LEADERBOARD).where(LEADERBOARD.c.result_id == result.id).values(verification=state)
    )


def _record_check(
    s: Session, policy: VerifyPolicy, device_id: str, agreed: bool, done: Round
) -> None:
    """The device's check history gains this one; a contributor with too many disputes
    in its window is suspended."""
    device = s.get(Device, device_id)
    if device is None:
        return
    device.checks = ("A" if agreed else "D") + device.checks
    device.checks = device.checks[: policy.window]
    disputes = device.checks.count("D")
    if device.contributor and not device.suspended and disputes >= policy.suspend_disputes:
        device.suspended = (
            f"{disputes} of its last {len(device.checks)} checked results were disputed "
            "or quarantined"
        )
        done.suspended.append(device.name)
    s.add(device)


# ---- new results: plausibility, then replication ------------------------------------


def _check_new(s: Session, policy: VerifyPolicy, done: Round) -> None:
    new = s.exec(
        select(Result)
        .where(col(Result.verification) == "unverified", col(Result.replica_run_id).is_(None))
        .order_by(col(Result.created_at))
        .limit(SCAN)
    ).all()
    if not new:
        return
    fleet = list(s.exec(select(Device)))
    budget = _budget(s, policy, fleet)
    for result in new:
        device = s.get(Device, result.device_id)
        if device is None:
            continue
        # checked once: a result that waits for a device to replicate on is looked at
        # again each round, its payload not parsed again
        problem = None if result.verification_note else implausibility(s, policy, result, device)
        if problem:
            _mark(s, result, "quarantined", problem)
            result.replica_run_id = ""
            done.quarantined.append(result.id)
            _record_check(s, policy, device.id, False, done)
            continue
        if not result.verification_note:
            result.verification_note = "plausible; waiting for a replication slot"
            s.add(result)
        if not _sampled(s, policy, result, device) or budget <= 0:
            continue
        selector = replica_selector(result, device, fleet)
        if selector is None:
            result.verification_note = (
                f"waiting for a device to replicate it on: no operator device of its "
                f"class ({device.hardware_class}) with its engine build, and no contributor "
                "of another owner"
            )
            s.add(result)
            continue
        _queue_replica(s, result, selector)
        done.replicated.append(result.id)
        budget -= 1


def _budget(s: Session, policy: VerifyPolicy, fleet: list[Device]) -> int:
    trusted = sum(1 for d in fleet if not d.contributor and takes_work(d))
    live = s.exec(
        select(func.count())
        .select_from(Run)
        .where(col(Run.checks_result_id).is_not(None), col(Run.state).in_(_LIVE))
    ).one()
    return max(1, int(policy.share * trusted)) - int(live)


def _sampled(s: Session, policy: VerifyPolicy, result: Result, device: Device) -> bool:
    """Whether the result is to be replicated: every one until its device has enough
    verified results, then one in `sample_every` (chosen by its id). One left out stays
    `unverified`, with a note that says so."""
    verified = s.exec(
        select(func.count())
        .select_from(Result)
        .where(
            col(Result.device_id) == device.id,
            col(Result.verification).in_(("verified", "verified-by-quorum")),
        )
    ).one()
    if verified < policy.enough_verified:
        return True
    pick = int(hashlib.sha256(result.id.encode()).hexdigest(), 16) % policy.sample_every == 0
    if not pick:
        result.replica_run_id = ""
        result.verification_note = (
            f"not replicated: {device.name} has {verified} verified results, so one in "
            f"{policy.sample_every} of its later results is checked"
        )
        s.add(result)
    return pick


def replica_selector(result: Result, device: Device, fleet: list[Device]) -> DeviceSelector | None:
    """Where a replication of the result may run: the same hardware class and engine
    build, on an operator device; where the fleet has none, on a contributor device of
    another owner (quorum). None when neither is enrolled."""
    version = capabilities_of(device).engines.get(result.backend)
    engines = {result.backend: version} if version else {}
    base = DeviceSelector(hardware_class=device.hardware_class, engines=engines)

    def alike(other: Device) -> bool:
        same_build = capabilities_of(other).engines.get(result.backend) == version
        return other.hardware_class == device.hardware_class and same_build and takes_work(other)

    if any(not other.contributor and alike(other) for other in fleet):
        return base.model_copy(update={"tiers": ["operator"]})
    owner = device.owner
    if owner and any(
        other.contributor and other.owner and other.owner != owner and alike(other)
        for other in fleet
    ):
        return base.model_copy(update={"tiers": ["contributor"], "not_owners": [owner]})
    return None


def _queue_replica(s: Session, result: Result, selector: DeviceSelector) -> None:
    run = s.get(Run, result.run_id)
    job = s.get(Job, result.job_id)
    assert run is not None and job is not None  # a result's run and job are never deleted
    spec = JobCreate.model_validate_json(job.spec_json)
    tests = TestMatrix(n_prompt=[run.n_prompt], n_gen=[run.n_gen], n_depth=[run.n_depth])
    spec = spec.model_copy(
        update={
            "models": [run.model_sha256],
            "backends": [run.backend],
            "variants": [run.variant],
            "workload": spec.workload.model_copy(update={"tests": tests}),
            "device": None,
            "selector": selector,
            "priority": PRIORITY,
            "submitter": SUBMITTER,
        }
    )
    replica_job = Job(
        spec_json=spec.model_dump_json(),
        selector_json=selector.model_dump_json(),
        priority=PRIORITY,
        submitter=SUBMITTER,
    )
    s.add(replica_job)
    replica = Run(
        id=new_id(),
        job_id=replica_job.id,
        model_sha256=run.model_sha256,
        backend=run.backend,
        variant=run.variant,
        n_depth=run.n_depth,
        n_prompt=run.n_prompt,
        n_gen=run.n_gen,
        selector_json=selector.model_dump_json(),
        priority=PRIORITY,
        submitter=SUBMITTER,
        checks_result_id=result.id,
    )
    s.add(replica)
    result.replica_run_id = replica.id
    result.verification_note = f"replication queued: {selector.describe()}"
    s.add(result)


def implausibility(s: Session, policy: VerifyPolicy, result: Result, device: Device) -> str | None:
    """Why a contributor's result is absurd beyond what recomputation catches, or None."""
    return _energy_problem(s, policy, result) or _speed_problem(s, policy, result, device)


def _energy_problem(s: Session, policy: VerifyPolicy, result: Result) -> str | None:
    """The measured phases' energy must agree with average power times their duration
    (both from the sensors the result carries, the duration from its raw timestamps)."""
    if result.avg_power_w is None:
        return None
    payload = s.get(ResultPayload, result.id)
    if payload is None:
        return None
    sensors: Any = json.loads(payload.sensors_json or "{}")
    parts = [sensors.get("prefill_j_gross"), sensors.get("decode_j_gross")]
    if not all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in parts):
        return None
    reps = unpack_reps(payload.timings)
    nanoseconds = sum(r.prefill_ns + r.token_ns[-1] - r.token_ns[0] for r in reps if r.token_ns)
    seconds = nanoseconds / 1e9
    if seconds < policy.min_energy_seconds:
        return None
    energy, expected = float(sum(parts)), result.avg_power_w * seconds
    if abs(energy - expected) > policy.energy_tolerance * max(expected, 1e-9):
        return (
            f"energy of the measured phases {energy:.4g} J is not average power x duration "
            f"({result.avg_power_w:.4g} W x {seconds:.3g} s = {expected:.4g} J) within "
            f"{policy.energy_tolerance:.0%}"
        )
    return None


def _speed_problem(s: Session, policy: VerifyPolicy, result: Result, device: Device) -> str | None:
    """Decode speed above `fast_factor` x the best trusted result of the device's class
    for a model of this size, when the model is many times the last-level cache (so
    memory bandwidth bounds decode and no device of the class can be that much faster)."""
    cache = identity_of(device).cache_bytes
    model_bytes = result.model_size_mb * 1024**2
    if not cache or model_bytes < policy.cache_multiple * cache:
        return None
    similar = col(Result.model_size_mb).between(
        result.model_size_mb * 0.9, result.model_size_mb * 1.1
    )
    best = s.exec(
        select(func.max(Result.decode_tps))
        .join(Device, col(Device.id) == col(Result.device_id))
        .where(
            col(Result.verification) == "trusted",
            col(Device.hardware_class) == device.hardware_class,
            similar,
        )
    ).one()
    if best and result.decode_tps > policy.fast_factor * best:
        return (
            f"decode {result.decode_tps:.4g} tok/s is over {policy.fast_factor:g}x the best "
            f"trusted result of its hardware class for a model this size ({best:.4g} tok/s)"
        )
    return None
