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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from edgebench.measure.readings import KINDS, UNITS, Reading

__all__ = ["KINDS", "UNITS", "Reading"]  # the shapes live in measure/; sources use them here


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


@dataclass(frozen=True)
class Traits:
    """What a source says about itself, so that nothing outside its module needs to know
    it by name."""

    measures_power: bool = False  # power or energy: an idle baseline is worth taking
    # How a throttle reading's value changes: "counter" goes up once per event,
    # "bitmask" holds flags that turn on and off (the flags say which).
    throttle: str = "counter"
    platform: str | None = None  # the platform its presence implies
    platform_rank: int = 100  # where sources imply several, the lowest rank names it
    accelerator: str | None = None  # the accelerator kind its presence implies


class Source(Protocol):
    """A sensor source. It may also have `close()`, called once when sampling ends (a
    source that runs a tool process ends it there)."""

    name: str
    interval_s: float  # the shortest sensible time between two reads
    traits: ClassVar[Traits]

    def read(self) -> list[Reading]: ...


Detector = Callable[[Roots], "Source | None"]
StateReader = Callable[[Roots], dict[str, Any]]
_REGISTRY: dict[str, Detector] = {}
_STATE_READERS: dict[str, StateReader] = {}


def register(name: str) -> Callable[[Detector], Detector]:
    def add(detector: Detector) -> Detector:
        _REGISTRY[name] = detector
        return detector

    return add


def registered() -> dict[str, Detector]:
    return dict(_REGISTRY)


def register_power_state(name: str) -> Callable[[StateReader], StateReader]:
    """A module's reader of settings that change performance (governor, power mode, clock
    configuration, fans, power limits), for the environment snapshot."""

    def add(reader: StateReader) -> StateReader:
        _STATE_READERS[name] = reader
        return reader

    return add


def power_state_readers() -> dict[str, StateReader]:
    return dict(_STATE_READERS)


def reason_of(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "not present"
    return exc.strerror or type(exc).__name__
