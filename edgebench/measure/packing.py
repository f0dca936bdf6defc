"""Packs the raw per-token timestamps of a result into one compact blob, so a run with
thousands of tokens is one row, not thousands.

Layout (little-endian int64): n_reps, n_gen, then per rep: prefill_ns, n_gen token_ns.
"""

from __future__ import annotations

import struct

from edgebench.measure.record import RepTiming

_HEADER = struct.Struct("<qq")


def pack_reps(reps: list[RepTiming]) -> bytes:
    n_gen = len(reps[0].token_ns) if reps else 0
    if any(len(r.token_ns) != n_gen for r in reps):
        raise ValueError("every repetition must have the same number of tokens")
    body = struct.Struct(f"<{1 + n_gen}q")
    return _HEADER.pack(len(reps), n_gen) + b"".join(
        body.pack(r.prefill_ns, *r.token_ns) for r in reps
    )


def unpack_reps(blob: bytes) -> list[RepTiming]:
    if len(blob) < _HEADER.size:
        raise ValueError("timings blob is truncated")
    n_reps, n_gen = _HEADER.unpack_from(blob)
    body = struct.Struct(f"<{1 + n_gen}q")
    if n_reps < 0 or n_gen < 0 or len(blob) != _HEADER.size + n_reps * body.size:
        raise ValueError("timings blob has the wrong size")
    reps = []
    for i in range(n_reps):
        prefill_ns, *tokens = body.unpack_from(blob, _HEADER.size + i * body.size)
        reps.append(RepTiming(prefill_ns=prefill_ns, token_ns=tuple(tokens)))
    return reps
