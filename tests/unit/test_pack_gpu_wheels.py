"""scripts/pack_gpu_wheels.py: only the other architectures' GPU code is zeroed."""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "pack_gpu_wheels", ROOT / "scripts" / "pack_gpu_wheels.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _entry(arch: int, payload: bytes) -> bytes:
    header = bytearray(64)
    struct.pack_into("<HHIQ", header, 0, 2, 0x101, len(header), len(payload))
    struct.pack_into("<I", header, 28, arch)
    return bytes(header) + payload


def _fatbin(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body)) + body


def test_only_entries_of_other_architectures_are_zeroed() -> None:
    pack = _script()
    keep, other = _entry(90, b"\x11" * 24), _entry(80, b"\x22" * 40)
    blobs = _fatbin(keep, other) + _fatbin(_entry(120, b"\x33" * 8))
    data = bytearray(b"\x55" * 8 + blobs + b"\x66" * 8)  # an unaligned lead-in is skipped
    zeroed = pack.zero_other_archs(data, 0, len(data) - 8, 90)
    assert zeroed == 48
    assert data.count(b"\x11") == 24 and b"\x22" not in data and b"\x33" not in data
    assert data[:8] == b"\x55" * 8 and data[-8:] == b"\x66" * 8
    assert len(data) == 16 + len(blobs)  # headers and sizes stay: nothing moves


def test_sections_are_found_in_a_real_elf_file() -> None:
    pack = _script()
    data = Path(sys.executable).resolve().read_bytes()
    text = pack.section(data, b".text")
    assert text is not None and text[1] > 0
    assert pack.section(data, b".nv_fatbin") is None
    assert pack.section(b"not an elf file at all", b".text") is None
