"""One small interface for every sensor source (node_exporter's collector model).

A source reads files under configurable roots and runs platform tools found on a
configurable PATH, so every reader is tested against fixture trees and captured outputs.
A reading that cannot be taken is reported as missing with its reason, never as zero.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

KINDS = ("energy", "power", "temperature", "frequency", "throttle")
UNITS = {"energy": "J", "power": "W", "temperature": "C", "frequency": "MHz", "throttle": ""}


@dataclass(frozen=True)
class Reading:
    source: str
    kind: str  # one of KINDS
    name: str
    scope: str  # what it measures: cpu_package, dram, gpu_board, module_input, pmic_rails, soc...
    unit: str
    value: float | None
    status: str = "ok"  # ok, missing, error
    reason: str = ""
    flags: dict[str, bool] | None = None  # throttle readings: named booleans
    primary: bool = False  # counts toward the device's total power (never a subset rail)
    maximum: float | None = None  # frequency readings: the clock's ceiling, where known

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for optional in ("flags", "maximum"):
            if data[optional] is None:
                data.pop(optional)
        data.pop("primary")
        return data


def missing(source: str, kind: str, name: str, scope: str, reason: str) -> Reading:
    return Reading(source, kind, name, scope, UNITS[kind], None, "missing", reason)


def read_text(path: Path) -> str:
    return path.read_text().strip()


@dataclass(frozen=True)
class Roots:
    """Where a source looks: sysfs and procfs roots, the PATH for platform tools, and the
    file reader (tests running as root inject one to simulate permission errors)."""

    sysfs: Path = Path("/sys")
    procfs: Path = Path("/proc")
    path: str | None = None  # PATH for vcgencmd, tegrastats...; None: the process's PATH
    reader: Callable[[Path], str] = read_text
    nvml: Any = None  # an NVML module (pynvml); None: import nvidia-ml-py when present
    extra: dict[str, Any] = field(default_factory=dict)

    def read(self, path: Path) -> str:
        return self.reader(path)

    def tool(self, name: str) -> str | None:
        search = self.path if self.path is not None else os.environ.get("PATH")
        return shutil.which(name, path=search)

    def run(self, *command: str, timeout: float = 5.0) -> str | None:
        """Output of a platform tool, or None when it is absent or fails."""
        executable = self.tool(command[0])
        if executable is None:
            return None
        try:
            done = subprocess.run([executable, *command[1:]], capture_output=True, text=True,
                                  timeout=timeout, check=False)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None


class Source(Protocol):
    name: str
    interval_s: float  # the shortest sensible time between two reads

    def read(self) -> list[Reading]: ...


Detector = Callable[[Roots], "Source | None"]
_REGISTRY: dict[str, Detector] = {}


def register(name: str) -> Callable[[Detector], Detector]:
    def add(detector: Detector) -> Detector:
        _REGISTRY[name] = detector
        return detector

    return add


def registered() -> dict[str, Detector]:
    return dict(_REGISTRY)


def reason_of(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "not present"
    return exc.strerror or type(exc).__name__
