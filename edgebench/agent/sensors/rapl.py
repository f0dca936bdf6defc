"""Intel and AMD RAPL energy counters through powercap sysfs.

Zones are found in the flat `class/powercap/intel-rapl*` list and identified by their
`name` file, never by directory suffix (ids are hex, order varies). A zone name seen twice
(`intel-rapl` and `intel-rapl-mmio` both expose `package-0`) is read once. Counters wrap
at `max_energy_range_uj`; `energy_uj` is root-only on kernels since late 2020.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from edgebench.agent.sensors.base import Reading, Roots, Traits, missing, reason_of, register

SCOPES = {"core": "cpu_core", "uncore": "uncore", "dram": "dram", "psys": "platform"}
PERMISSION_HINT = (
    "permission denied: energy_uj is root-only since Linux 5.10 (CVE-2020-8694); run the "
    "agent as root or make energy_uj readable"
)


def scope_of(zone_name: str) -> str:
    return "cpu_package" if zone_name.startswith("package") else SCOPES.get(zone_name, zone_name)


@dataclass
class Zone:
    name: str
    path: Path
    range_uj: int
    first_uj: int | None = None
    last_uj: int | None = None
    total_uj: int = 0  # accumulated since the first read, across wraps


def wrapped_delta(before: int, after: int, range_uj: int) -> int:
    """Energy between two counter reads, assuming at most one wrap between them."""
    return after - before if after >= before else after + (range_uj - before)


@dataclass
class RaplSource:
    roots: Roots
    zones: list[Zone]
    name: str = "rapl"
    traits: ClassVar[Traits] = Traits(measures_power=True, platform="x86_rapl", platform_rank=2)
    interval_s: float = 0.1
    _denied: set[str] = field(default_factory=set)

    def read(self) -> list[Reading]:
        return [self._read_zone(zone) for zone in self.zones]

    def _read_zone(self, zone: Zone) -> Reading:
        scope = scope_of(zone.name)
        try:
            raw = int(self.roots.read(zone.path / "energy_uj"))
        except PermissionError:
            return missing(self.name, "energy", zone.name, scope, PERMISSION_HINT)
        except (OSError, ValueError) as exc:
            reason = reason_of(exc) if isinstance(exc, OSError) else "unreadable value"
            return missing(self.name, "energy", zone.name, scope, reason)
        if zone.last_uj is not None:
            zone.total_uj += wrapped_delta(zone.last_uj, raw, zone.range_uj)
        else:
            zone.first_uj = raw
        zone.last_uj = raw
        # The counter unwrapped: its first value plus everything counted since.
        joules = ((zone.first_uj or 0) + zone.total_uj) / 1e6
        return Reading(self.name, "energy", zone.name, scope, "J", joules,
                       primary=scope == "cpu_package")  # fmt: skip


@register("rapl")
def detect(roots: Roots) -> RaplSource | None:
    base = roots.sysfs / "class" / "powercap"
    if not base.is_dir():
        return None
    zones: list[Zone] = []
    seen: set[str] = set()
    # The MSR interface (intel-rapl) before the MMIO one, so a duplicate is the MMIO copy.
    for entry in sorted(base.iterdir(), key=lambda p: ("mmio" in p.name, p.name)):
        if not entry.name.startswith("intel-rapl") or not (entry / "name").exists():
            continue
        try:
            name = roots.read(entry / "name")
            range_uj = int(roots.read(entry / "max_energy_range_uj"))
        except (OSError, ValueError):
            continue
        if name in seen:  # the same domain through a second interface: count it once
            continue
        seen.add(name)
        zones.append(Zone(name=name, path=entry, range_uj=range_uj))
    return RaplSource(roots, zones) if zones else None
