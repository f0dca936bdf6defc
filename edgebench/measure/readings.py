"""A sensor reading and a sample: what the agent's sensor sources produce, in the shape
the energy maths and the result record read (no sensor code here)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

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


@dataclass(frozen=True)
class Sample:
    t_ns: int
    reading: Reading
