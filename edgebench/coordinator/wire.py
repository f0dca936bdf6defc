"""Validation and conversion of what agents send, before anything reaches the store."""

from __future__ import annotations

import json
import math
import re
import uuid
from typing import Any

from pydantic import ValidationError

from edgebench.coordinator.lifecycle import Claim
from edgebench.coordinator.tables import Artifact, Run
from edgebench.dashboard.models import JobCreate
from edgebench.device import HardwareInfo
from edgebench.measure.packing import pack_reps
from edgebench.measure.record import FIELD_NAMES, NULLABLE_FIELDS, RepTiming, summarize
from edgebench.proto.convert import from_message, to_message
from edgebench.proto.v1 import agent_pb2 as pb
from edgebench.protocol import NAME_RE, TAG_RE
from edgebench.workload import RunSpec, TestMatrix

MAX_TEXT = 256
MAX_TAGS = 32
MAX_REPS = 10_000
MAX_TOKENS_PER_REP = 1_000_000
MAX_WINDOWS = 100_000
MAX_ENVIRONMENT = 64 * 1024
MAX_SENSORS = 8 * 1024 * 1024
MAX_JSON_DEPTH = 16
# The figures a result's raw per-token timestamps decide: recomputed here, never taken on
# the agent's word (the same function made them on the agent: equal but for rounding).
FROM_TIMESTAMPS = ("ttft_ms", "ttft_ms_std", "prefill_tps", "prefill_tps_std",
                   "prefill_tps_ci95", "decode_tps", "decode_tps_std", "decode_tps_ci95",
                   "decode_tps_per_core", "itl_p50_ms", "itl_p90_ms", "itl_p95_ms",
                   "itl_p99_ms", "itl_max_ms", "e2e_ms", "e2e_ms_std")  # fmt: skip


class WireError(ValueError):
    """A message that breaks the contract; the message is sent back to the agent."""


def check_name(name: str, what: str = "device name") -> str:
    if not NAME_RE.match(name):
        raise WireError(
            f"{what} {name!r} must be 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_uuid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise WireError(f"{what} must be a UUID") from None


def check_tags(tags: dict[str, str]) -> dict[str, str]:
    if len(tags) > MAX_TAGS:
        raise WireError(f"at most {MAX_TAGS} tags")
    for key, value in tags.items():
        if not TAG_RE.match(key) or len(value) > MAX_TEXT:
            raise WireError(f"bad tag {key!r}")
    return dict(tags)


def hardware_of(message: pb.HardwareInfo) -> HardwareInfo:
    """What a device says it is and can run, checked (lengths, signs, sizes)."""
    try:
        return from_message(message, HardwareInfo)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"])
        raise WireError(f"hardware field {where}: {problem['msg']}") from None


def result_values(metrics: pb.Metrics) -> tuple[dict[str, Any], list[RepTiming]]:
    """The stable fields, provenance and raw timings of a result, checked for consistency.
    Optional wire fields that are unset become None (unknown), never zero."""
    values: dict[str, Any] = {
        name: getattr(metrics, name)
        if name not in NULLABLE_FIELDS or metrics.HasField(name)  # type: ignore[arg-type]
        else None
        for name in FIELD_NAMES
    }
    values["engine_version"] = metrics.engine_version[:MAX_TEXT]
    values["definitions_version"] = metrics.definitions_version[:MAX_TEXT]
    values["reps_mode"] = metrics.reps_mode[:16] or "fixed"
    values["source_sha256"] = metrics.source_sha256[:64]
    values["window_s"] = metrics.window_s if metrics.HasField("window_s") else None
    if values["window_s"] is not None and not 0 < values["window_s"] < math.inf:
        raise WireError("window_s must be a finite, positive number of seconds")
    if len(metrics.windows_tps) > MAX_WINDOWS or any(
        not math.isfinite(w) or w < 0 for w in metrics.windows_tps
    ):
        raise WireError("sustained windows must be at most 100000 finite, non-negative rates")
    values["windows_json"] = json.dumps(list(metrics.windows_tps))
    values["environment_json"] = _json_object(metrics.environment_json, "environment snapshot")
    values["sensors_json"] = _json_object(metrics.sensors_json, "sensor record", MAX_SENSORS)
    for name in ("backend", "variant"):
        if not values[name] or len(values[name]) > 64:
            raise WireError(f"result field {name} is empty or too long")
    if not re.match(r"^[0-9a-f]{64}$", metrics.model_sha256):
        raise WireError("result field model_sha256 is not a sha256")
    reps = list(metrics.rep_timings)
    if len(reps) != metrics.reps or not 0 < len(reps) <= MAX_REPS:
        raise WireError("result must carry the raw timings of every repetition")
    timings = []
    for rep in reps:
        stamps = tuple(rep.token_ns)
        if len(stamps) != metrics.n_gen or len(stamps) > MAX_TOKENS_PER_REP:
            raise WireError("every repetition must carry exactly n_gen token timestamps")
        # sorted() meets an increasing list in one pass, in C: a Python loop over every
        # token was the biggest cost of a result on the event loop (benchmarks/fleet.py).
        if not stamps:
            raise WireError("every repetition must carry at least one token timestamp")
        if rep.prefill_ns <= 0 or stamps[0] <= 0 or list(stamps) != sorted(stamps):
            raise WireError("token timestamps must be positive and increasing")
        if len(stamps) > 1 and stamps[-1] <= stamps[0]:
            raise WireError("a repetition's decode must take time (its timestamps are equal)")
        timings.append(RepTiming(prefill_ns=rep.prefill_ns, token_ns=stamps, start_ns=rep.start_ns))
    disagreement = _disagreement_with(timings, values)
    if disagreement:
        raise WireError(disagreement)
    return values, timings


def _disagreement_with(timings: list[RepTiming], values: dict[str, Any]) -> str | None:
    """Which reported figure the raw timestamps contradict, or None."""
    if len(timings[0].token_ns) < 2:
        return None  # no decode to speak of: the store's plausibility check refuses it
    threads, n_prompt = values["threads"], values["n_prompt"]
    again = summarize(timings, backend="", variant="", model_sha256="", threads=threads,
                      n_prompt=n_prompt, load_ms=0.0, peak_rss_mb=0.0).fields()  # fmt: skip
    for name in FROM_TIMESTAMPS:
        said, computed = values[name], again[name]
        if not isinstance(said, int | float) or not math.isclose(
            said, computed, rel_tol=1e-6, abs_tol=1e-9
        ):
            return (
                f"{name} {said!r} disagrees with the raw timestamps, which give "
                f"{computed:.6g}; the result was refused"
            )
    return None


def _not_finite(constant: str) -> Any:
    raise WireError(f"{constant} is not a number JSON allows")


def _json_object(text: str, what: str, limit: int = MAX_ENVIRONMENT) -> str:
    """Checked free-form JSON: an object, at most MAX_JSON_DEPTH deep, finite numbers
    only, so that no stored row can make a later read fail."""
    if len(text) > limit:
        raise WireError(f"{what} is too large")
    try:
        data = json.loads(text or "{}", parse_constant=_not_finite)
    except (json.JSONDecodeError, RecursionError):
        raise WireError(f"{what} is not JSON of at most {MAX_JSON_DEPTH} levels") from None
    except WireError as exc:
        raise WireError(f"{what}: {exc}") from None
    if not isinstance(data, dict):
        raise WireError(f"{what} must be a JSON object")
    if _depth(data) > MAX_JSON_DEPTH:
        raise WireError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
    return text or "{}"  # checked, and kept as sent (writing it again cost as much)


def _depth(data: Any) -> int:
    """How deep objects and arrays nest (1 for a flat object), without recursion."""
    deepest, level = 0, [data]
    while level:
        deepest += 1
        if deepest > MAX_JSON_DEPTH:
            return deepest
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list)
        ]
    return deepest


def checked_result(metrics: pb.Metrics, logical_cpus: int = 0) -> tuple[dict[str, Any], bytes]:
    """The result's stored values and packed timings; `logical_cpus` (the device's, 0 when
    unknown) bounds the threads it says it ran with."""
    values, timings = result_values(metrics)
    threads = values.get("threads") or 0
    if logical_cpus and threads > logical_cpus:
        raise WireError(f"threads {threads} is more than the device's {logical_cpus} logical CPUs")
    return values, pack_reps(timings)


def assignment_for(
    claim: Claim, artifact: Artifact | None, spec: JobCreate, lease_seconds: int
) -> pb.RunAssignment:
    run = claim.run
    return pb.RunAssignment(
        run_id=run.id,
        job_id=run.job_id,
        lease_epoch=run.lease_epoch,
        lease_seconds=lease_seconds,
        request_id=run.lease_request_id or "",
        model=pb.ModelRef(
            sha256=run.model_sha256,
            filename=artifact.filename if artifact else "",
            size_bytes=artifact.size_bytes if artifact else 0,
            format=artifact.format if artifact else "gguf",
        ),
        spec=to_message(run_spec(run, spec), pb.RunSpec()),
    )


def run_spec(run: Run, job: JobCreate) -> RunSpec:
    """A run's spec: its job's workload with the one test this run measures."""
    test = TestMatrix(n_prompt=[run.n_prompt], n_gen=[run.n_gen], n_depth=[run.n_depth])
    workload = job.workload.model_copy(update={"tests": test})
    return RunSpec(backend=run.backend, variant=run.variant, workload=workload)
