"""What a device is and what it can run: the one home of the hardware fields.

Identity (architecture, CPU, cores, memory, accelerator) says what the device is and
changes only when the hardware does; capabilities (engines and their versions, kernel,
OS release, Python, edgebench) say what is installed now and may change on any
connection. Agents send both on enrollment and on every connection; the protobuf
messages mirror these models (tests/unit/test_wire_shapes.py), the store keeps each as
JSON, the API returns them as they are, and selectors and the scheduler read them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_TEXT = 256
MAX_ENGINES = 32


def _text(description: str) -> Any:
    return Field(default="", max_length=MAX_TEXT, description=description)


def _count(description: str, le: float) -> Any:
    return Field(default=0, ge=0, le=le, description=description)


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceIdentity(_Shape):
    hostname: str = _text("host name")
    cpu_model: str = _text("CPU model as the OS names it")
    cpu_cores_physical: int = _count("physical CPU cores", 1 << 16)
    cpu_cores_logical: int = _count("logical CPUs", 1 << 16)
    cpu_max_mhz: float = _count("the CPU's highest clock, MHz; 0 when unknown", 1e6)
    ram_bytes: int = _count("memory, bytes", 1 << 60)
    os: str = _text("operating system, e.g. Linux")
    arch: str = _text("CPU architecture, e.g. x86_64, aarch64")
    accelerator: str = _text("cuda where NVML or a Jetson GPU answers, else none")
    cache_bytes: int = _count("the CPU's last-level cache, bytes; 0 when unknown", 1 << 40)


class DeviceCapabilities(_Shape):
    engines: dict[str, str] = Field(
        default_factory=dict, description="installed engines and their versions"
    )
    kernel: str = _text("kernel release")
    os_release: str = _text("OS release, e.g. Debian GNU/Linux 12 (bookworm)")
    python_version: str = _text("Python version")
    edgebench_version: str = _text("edgebench version")

    @field_validator("engines")
    @classmethod
    def _small(cls, engines: dict[str, str]) -> dict[str, str]:
        if len(engines) > MAX_ENGINES:
            raise ValueError(f"at most {MAX_ENGINES} engines")
        if any(len(k) + len(v) > MAX_TEXT for k, v in engines.items()):
            raise ValueError("an engine name or version is too long")
        return engines


class HardwareInfo(_Shape):
    identity: DeviceIdentity = Field(default_factory=DeviceIdentity)
    capabilities: DeviceCapabilities = Field(default_factory=DeviceCapabilities)

    def flat(self) -> dict[str, Any]:
        """Both as one mapping (the provenance snapshot of every result)."""
        return {**self.identity.model_dump(), **self.capabilities.model_dump()}

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> HardwareInfo:
        """From one mapping of field names (tests, scripts); unknown names are refused."""
        parts: dict[str, dict[str, Any]] = {"identity": {}, "capabilities": {}}
        for name, value in values.items():
            if name in DeviceIdentity.model_fields:
                parts["identity"][name] = value
            elif name in DeviceCapabilities.model_fields:
                parts["capabilities"][name] = value
            else:
                raise ValueError(f"unknown hardware field {name!r}")
        return cls.model_validate(parts)


def hardware_signature(identity: DeviceIdentity) -> str:
    """What must not change under an enrolled device without an admin's word: its
    architecture and hardware class (CPU or accelerator, cores, memory). Installed engines,
    versions, kernel and host name may change freely."""
    return f"{identity.arch or 'unknown arch'} · {hardware_class(identity)}"


def hardware_class(identity: DeviceIdentity) -> str:
    """The class of machines a device belongs to: its accelerator's or CPU's name, its
    core count and its memory rounded to a power of two. Devices of one class are
    expected to measure alike: the leaderboard filters by it and trust rules compare
    within it. Defined here only."""
    name = identity.cpu_model.strip() or "unknown CPU"
    if identity.accelerator not in ("", "none"):
        name = f"{name} + {identity.accelerator}"
    cores = identity.cpu_cores_physical or identity.cpu_cores_logical
    gib = identity.ram_bytes / 1024**3
    memory = f"{2 ** round(math.log2(gib))} GiB" if gib >= 0.5 else "<0.5 GiB"
    return f"{name} · {cores} cores · {memory}"
