"""Messages for fuzzing the agent port: any message of the wire contract with every field
drawn from its type (NaN and infinities, extreme integers, long and hostile strings,
nested messages, maps), plausible results made the way an agent makes them, and raw
bytes no message parses from. Used by tests/integration/test_fuzz.py (bounded) and
scripts/fuzz.py (100,000 per RPC)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from edgebench.agent.wire import metrics_message
from edgebench.measure.record import RepTiming, summarize
from edgebench.proto.v1 import agent_pb2 as pb

# What a coordinator may answer a hostile call with; anything else is a server error.
CLIENT_ERRORS = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
}
HOSTILE_TEXT = ["", "../../etc/passwd", "a" * 64, "\x00", "[/bold]", "\x1b]8;;x\x07", "é" * 300]
_F = FieldDescriptor
_INTEGERS = {
    _F.TYPE_INT32: (-(2**31), 2**31 - 1),
    _F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _F.TYPE_INT64: (-(2**63), 2**63 - 1),
    _F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _F.TYPE_UINT32: (0, 2**32 - 1),
    _F.TYPE_FIXED32: (0, 2**32 - 1),
    _F.TYPE_UINT64: (0, 2**64 - 1),
    _F.TYPE_FIXED64: (0, 2**64 - 1),
    _F.TYPE_ENUM: (-5, 20),
}


def texts() -> st.SearchStrategy[str]:
    ids = st.builds(lambda: str(uuid.uuid4()))
    return st.one_of(st.sampled_from(HOSTILE_TEXT), ids, st.text(max_size=40))


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type in _INTEGERS:
        low, high = _INTEGERS[field.type]
        return st.one_of(st.integers(-3, 100), st.integers(low, high))
    if field.type == _F.TYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if field.type == _F.TYPE_FLOAT:
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if field.type == _F.TYPE_BOOL:
        return st.booleans()
    if field.type == _F.TYPE_BYTES:
        return st.binary(max_size=64)
    return texts()


def _field(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == _F.TYPE_MESSAGE:
        entry = field.message_type
        assert entry is not None
        if entry.GetOptions().map_entry:
            keys = _scalar(entry.fields_by_name["key"])
            values = _field(entry.fields_by_name["value"], depth + 1)
            return st.dictionaries(keys, values, max_size=4)
        one = messages_of_descriptor(entry, depth + 1)
    else:
        one = _scalar(field)
    if field.is_repeated:
        return st.lists(one, max_size=6)
    return one


def messages_of_descriptor(descriptor: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    cls = _classes()[descriptor.full_name]
    if depth > 3:
        return st.just(cls())
    fields = {f.name: _field(f, depth) for f in descriptor.fields}
    return st.fixed_dictionaries({}, optional=fields).map(lambda values: _build(cls, values))


def messages(cls: type[Message]) -> st.SearchStrategy[Any]:
    return messages_of_descriptor(cls.DESCRIPTOR)


def _build(cls: Callable[..., Message], values: dict[str, Any]) -> Message:
    try:
        return cls(**values)
    except (ValueError, TypeError):  # a value the runtime itself cannot hold (bad UTF-8...)
        return cls()


def _classes() -> dict[str, Any]:
    return {
        getattr(pb, name).DESCRIPTOR.full_name: getattr(pb, name)
        for name in dir(pb)
        if isinstance(getattr(pb, name), type) and issubclass(getattr(pb, name), Message)
    }


@st.composite
def plausible_metrics(draw: st.DrawFn) -> pb.Metrics:
    """A result as an agent makes it (figures agree with the raw timestamps), with a
    field or two then drawn anew: the deep checks, not only the shallow ones."""
    n_gen, reps = draw(st.integers(2, 8)), draw(st.integers(1, 3))
    timings = []
    for _ in range(reps):
        gaps = draw(st.lists(st.integers(1, 10**8), min_size=n_gen, max_size=n_gen))
        start = draw(st.integers(1, 10**9))
        stamps = [start + sum(gaps[: i + 1]) for i in range(n_gen)]
        timings.append(RepTiming(prefill_ns=start, token_ns=tuple(stamps)))
    made = summarize(timings, backend="llama_cpp", variant="F32", model_sha256="a" * 64,
                     threads=draw(st.integers(0, 512)), n_prompt=draw(st.integers(0, 4096)),
                     load_ms=1.0, peak_rss_mb=1.0)  # fmt: skip
    metrics = metrics_message(made)
    for name, value in draw(
        st.dictionaries(st.sampled_from(_METRIC_FIELDS), st.floats(), max_size=2)
    ).items():
        setattr(metrics, name, value)
    return metrics


_METRIC_FIELDS = ["decode_tps", "prefill_tps", "ttft_ms", "itl_p99_ms", "avg_power_w", "load_ms"]


def agent_messages() -> st.SearchStrategy[pb.AgentMessage]:
    """Any session message, and results that pass the shallow checks."""
    result = st.builds(
        lambda metrics, run_id: pb.AgentMessage(
            result=pb.RunResult(
                result_id=str(uuid.uuid4()), run_id=run_id, lease_epoch=1, metrics=metrics
            )
        ),
        plausible_metrics(),
        texts(),
    )
    return st.one_of(messages(pb.AgentMessage), result)


def garbage() -> st.SearchStrategy[bytes]:
    return st.binary(min_size=1, max_size=256)
