"""The agent's side of the wire: its results as protobuf, and the run specs it is sent,
checked like any input from the network (a coordinator, or anyone on the path, may send
anything)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from edgebench.errors import EdgebenchError
from edgebench.measure.record import BenchResult
from edgebench.proto.convert import from_message
from edgebench.proto.v1 import agent_pb2 as pb
from edgebench.workload import RunSpec


class WireError(EdgebenchError, ValueError):
    """What the coordinator sent breaks the contract; the run fails with this message."""


def metrics_message(result: BenchResult) -> pb.Metrics:
    # Unset optional fields say "unknown", which is not the same as zero.
    fields = {name: value for name, value in result.fields().items() if value is not None}
    extra: dict[str, Any] = {} if result.window_s is None else {"window_s": result.window_s}
    return pb.Metrics(
        **fields,
        **extra,
        engine_version=result.engine_version,
        definitions_version=result.definitions_version,
        source_sha256=result.source_sha256,
        reps_mode=result.reps_mode,
        windows_tps=result.windows_tps,
        environment_json=json.dumps(result.environment, sort_keys=True, default=str),
        sensors_json=json.dumps(result.sensors, default=str),
        rep_timings=[
            pb.RepTimings(prefill_ns=r.prefill_ns, token_ns=r.token_ns, start_ns=r.start_ns)
            for r in result.rep_timings
        ],
    )


def spec_from(assignment: pb.RunAssignment) -> RunSpec:
    """The runner's spec for a run, checked like any input from the network. A missing
    spec or test is refused, never filled with defaults: that run would measure
    something nobody asked for (an older coordinator sends its workload elsewhere)."""
    if not assignment.HasField("spec") or not assignment.spec.workload.HasField("tests"):
        raise WireError(
            "the assignment carries no run spec or no test: is the coordinator another "
            "edgebench version than this agent?"
        )
    try:
        return from_message(assignment.spec, RunSpec)
    except ValidationError as exc:
        raise WireError(f"the coordinator sent an invalid run spec: {exc}") from None
