"""Packs the raw per-token timestamps of a result into one compact blob, so a run with
thousands of tokens is one row, not thousands.

Layout (little-endian int64): n_reps, then per rep: start_ns, prefill_ns, n_tokens and
n_tokens token_ns. Reps may differ in length (sustained mode stops mid-rep).
"""

from __future__ import annotations

import struct

from edgebench.measure.record import RepTiming

_INT = struct.Struct("<q")
_REP_HEAD = struct.Struct("<qqq")


def pack_reps(reps: list[RepTiming]) -> bytes:
    parts = [_INT.pack(len(reps))]
    for rep in reps:
        parts.append(_REP_HEAD.pack(rep.start_ns, rep.prefill_ns, len(rep.token_ns)))
        parts.append(struct.pack(f"<{len(rep.token_ns)}q", *rep.token_ns))
    return b"".join(parts)


def unpack_reps(blob: bytes) -> list[RepTiming]:
    try:
        (n_reps,) = _INT.unpack_from(blob)
        offset = _INT.size
        reps = []
        for _ in range(n_reps):
            start_ns, prefill_ns, n_tokens = _REP_HEAD.unpack_from(blob, offset)
            offset += _REP_HEAD.size
            if n_tokens < 0:
                raise ValueError("negative token count")
            tokens = struct.unpack_from(f"<{n_tokens}q", blob, offset)
            offset += 8 * n_tokens
            reps.append(RepTiming(prefill_ns=prefill_ns, token_ns=tokens, start_ns=start_ns))
    except struct.error as exc:
        raise ValueError(f"timings blob is truncated ({exc})") from None
    if n_reps < 0 or offset != len(blob):
        raise ValueError("timings blob has the wrong size")
    return reps
