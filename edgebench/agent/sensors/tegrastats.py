"""Jetson fallback: rail power from `tegrastats` when no INA3221 sysfs node is readable.

tegrastats is a second process printing a line per interval; it is started once and its
lines are parsed as they come. Rail formats: JetPack 4 `NAME cur/avg` (mW, no unit),
JetPack 5/6 `NAMEcurmW/avgmW`, JetPack 7 adds a third value. `NC` rails are skipped; the
module input rail (VDD_IN, POM_5V_IN) is the total where present.
"""

from __future__ import annotations

import re
import subprocess
import threading
from dataclasses import dataclass, field
from typing import ClassVar

from edgebench.agent.sensors.base import Reading, Roots, Traits, missing, register

RAIL = re.compile(r"\b([A-Z][A-Z0-9_]+) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?\b")
INPUT_RAILS = {"VDD_IN", "POM_5V_IN"}
FIRST_LINE_S = 1.5  # tegrastats prints its first line after one interval
NOT_RAILS = {"RAM", "SWAP", "IRAM", "EMC_FREQ", "GR3D_FREQ", "APE", "NC"}


def parse_rails(line: str) -> dict[str, float]:
    """Rail name -> current power in W."""
    rails = {}
    for match in RAIL.finditer(line):
        name = match.group(1)
        if name not in NOT_RAILS:
            rails[name] = int(match.group(2)) / 1000.0
    return rails


@dataclass
class TegrastatsSource:
    process: subprocess.Popen[str]
    name: str = "tegrastats"
    traits: ClassVar[Traits] = Traits(
        measures_power=True, platform="jetson", platform_rank=1, accelerator="cuda"
    )
    interval_s: float = 0.1
    _latest: dict[str, float] = field(default_factory=dict)
    _fresh: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _first_line: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        threading.Thread(target=self._follow, name="tegrastats", daemon=True).start()

    def _follow(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            rails = parse_rails(line)
            if rails:
                with self._lock:
                    self._latest, self._fresh = rails, True
                self._first_line.set()

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=5)

    def read(self) -> list[Reading]:
        if not self._latest:
            self._first_line.wait(FIRST_LINE_S)
        with self._lock:
            rails, fresh, self._fresh = dict(self._latest), self._fresh, False
        if not rails:
            return [missing(self.name, "power", "rails", "module_input", "no tegrastats line yet")]
        if not fresh:
            return []  # nothing new since the last read: no stale value gets a new time
        has_input = bool(rails.keys() & INPUT_RAILS)
        return [
            Reading(self.name, "power", rail, "module_input" if rail in INPUT_RAILS else "rail",
                    "W", watts, primary=rail in INPUT_RAILS or not has_input)
            for rail, watts in rails.items()
        ]  # fmt: skip


@register("tegrastats")
def detect(roots: Roots) -> TegrastatsSource | None:
    drivers = roots.sysfs / "bus" / "i2c" / "drivers"
    if any(drivers.glob("ina3221*/*")):
        return None  # sysfs is read directly; tegrastats is only the fallback
    tool = roots.tool("tegrastats")
    if tool is None:
        return None
    process = subprocess.Popen([tool, "--interval", "100"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    return TegrastatsSource(process)
