"""How many parameters a model has, read from its file's headers without loading it: a
GGUF's tensor table, or the safetensors headers of a transformers folder (as its tar).
The coordinator counts once per uploaded artifact; the leaderboard buckets by it.

Files are hostile: every length is bounded, and anything unexpected means "unknown"
(None), never an exception or a large allocation."""

from __future__ import annotations

import json
import struct
import tarfile
from pathlib import Path
from typing import BinaryIO

from edgebench.engines import GGUF_MAGIC

MAX_STRING = 1 << 20
MAX_ITEMS = 1 << 24
MAX_TENSORS = 1 << 20
MAX_DIMS = 8
MAX_HEADER = 100 << 20  # safetensors headers are JSON; real ones are far smaller
# GGUF value types -> their fixed size in bytes (8: string, 9: array have none)
_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


class _Bad(Exception):
    pass


def parameter_count(path: Path, fmt: str) -> int | None:
    """The model's parameter count, or None when it cannot be read from the file."""
    try:
        if fmt == "gguf":
            with path.open("rb") as handle:
                return _gguf(handle)
        if fmt == "hf":
            return _safetensors_tar(path)
    except (OSError, _Bad, ValueError, struct.error, tarfile.TarError):
        return None
    return None


def _read(handle: BinaryIO, size: int) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise _Bad("truncated")
    return data


def _u32(handle: BinaryIO) -> int:
    return int(struct.unpack("<I", _read(handle, 4))[0])


def _u64(handle: BinaryIO) -> int:
    return int(struct.unpack("<Q", _read(handle, 8))[0])


def _skip_string(handle: BinaryIO) -> None:
    length = _u64(handle)
    if length > MAX_STRING:
        raise _Bad("string too long")
    handle.seek(length, 1)


def _skip_value(handle: BinaryIO, kind: int) -> None:
    if kind in _SIZES:
        handle.seek(_SIZES[kind], 1)
    elif kind == 8:
        _skip_string(handle)
    elif kind == 9:
        item, count = _u32(handle), _u64(handle)
        if count > MAX_ITEMS:
            raise _Bad("array too long")
        if item in _SIZES:
            handle.seek(_SIZES[item] * count, 1)
        elif item == 8:
            for _ in range(count):
                _skip_string(handle)
        else:
            raise _Bad("nested arrays")
    else:
        raise _Bad(f"unknown value type {kind}")


def _gguf(handle: BinaryIO) -> int:
    if _read(handle, 4) != GGUF_MAGIC or _u32(handle) < 2:
        raise _Bad("not a GGUF v2+")
    tensors, pairs = _u64(handle), _u64(handle)
    if tensors > MAX_TENSORS or pairs > MAX_ITEMS:
        raise _Bad("too many entries")
    for _ in range(pairs):
        _skip_string(handle)
        _skip_value(handle, _u32(handle))
    total = 0
    for _ in range(tensors):
        _skip_string(handle)
        dims = _u32(handle)
        if dims > MAX_DIMS:
            raise _Bad("too many dimensions")
        count = 1
        for _ in range(dims):
            count *= _u64(handle)
        _read(handle, 12)  # type (u32), offset (u64)
        total += count
    return total


def _safetensors_tar(path: Path) -> int | None:
    total, found = 0, False
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            if not member.isfile() or not member.name.endswith(".safetensors"):
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            length = int(struct.unpack("<Q", _read(handle, 8))[0])  # type: ignore[arg-type]
            if length > min(MAX_HEADER, member.size):
                raise _Bad("header too long")
            header = json.loads(_read(handle, length))  # type: ignore[arg-type]
            for name, entry in header.items():
                if name == "__metadata__":
                    continue
                count = 1
                for dim in entry["shape"][:MAX_DIMS]:
                    count *= int(dim)
                total += count
            found = True
    return total if found else None


SIZE_BUCKETS: tuple[tuple[str, float], ...] = (
    ("<0.5B", 0.5e9),
    ("0.5-1.5B", 1.5e9),
    ("1.5-4B", 4e9),
    (">4B", float("inf")),
)


BUCKET_NAMES: tuple[str, ...] = (*(name for name, _ in SIZE_BUCKETS), "unknown")


def size_bucket(parameters: int | None) -> str:
    """The leaderboard's parameter-size bucket ("unknown" when uncounted)."""
    if not parameters:
        return "unknown"
    return next(name for name, upper in SIZE_BUCKETS if parameters < upper)
