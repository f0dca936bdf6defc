"""Temperatures from thermal zones (`type`, `temp` in m°C) and hwmon `temp*_input`.

Zones are keyed by type (numbering changes across boots); repeated types get a suffix.
An empty or failing zone, or Jetson's -256 °C for an offline sensor, is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from edgebench.agent.sensors.base import (
    Reading,
    Roots,
    Traits,
    missing,
    reason_of,
    register,
    register_power_state,
)

OFFLINE_C = -256.0
SKIP_TYPES = {"pmic", "pmic-die"}  # constant placeholders on Jetson


@dataclass
class ThermalSource:
    roots: Roots
    sensors: list[tuple[str, str, Path]]  # (name, scope, temp file)
    name: str = "thermal"
    traits: ClassVar[Traits] = Traits()
    interval_s: float = 0.1

    def read(self) -> list[Reading]:
        readings = []
        for name, scope, path in self.sensors:
            try:
                celsius = int(self.roots.read(path)) / 1000.0
            except OSError as exc:
                readings.append(missing(self.name, "temperature", name, scope, reason_of(exc)))
                continue
            except ValueError:
                readings.append(missing(self.name, "temperature", name, scope, "empty or invalid"))
                continue
            if celsius <= OFFLINE_C:
                readings.append(missing(self.name, "temperature", name, scope, "sensor offline"))
                continue
            readings.append(Reading(self.name, "temperature", name, scope, "C", celsius))
        return readings


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        candidate = f"{name}{n}"
        n += 1
    taken.add(candidate)
    return candidate


@register("thermal")
def detect(roots: Roots) -> ThermalSource | None:
    sensors: list[tuple[str, str, Path]] = []
    taken: set[str] = set()
    zones = roots.sysfs / "class" / "thermal"
    if zones.is_dir():
        for zone in sorted(zones.glob("thermal_zone*")):
            try:
                kind = roots.read(zone / "type")
            except OSError:
                continue
            if kind.lower() not in SKIP_TYPES:
                sensors.append((_unique(kind, taken), "soc", zone / "temp"))
    hwmon = roots.sysfs / "class" / "hwmon"
    if hwmon.is_dir():
        for chip in sorted(hwmon.glob("hwmon*")):
            try:
                chip_name = roots.read(chip / "name")
            except OSError:
                continue
            for temp in sorted(chip.glob("temp*_input")):
                label_file = chip / temp.name.replace("_input", "_label")
                label = roots.read(label_file) if label_file.exists() else temp.name.split("_")[0]
                sensors.append((_unique(f"{chip_name}/{label}", taken), chip_name, temp))
    return ThermalSource(roots, sensors) if sensors else None


@register_power_state("fans")
def fans(roots: Roots) -> dict[str, Any]:
    """hwmon fans (Pi 5 `pwmfan`/`cooling_fan`, Jetson `pwm-fan`): speed and PWM duty."""
    found: dict[str, dict[str, int]] = {}
    for chip in sorted((roots.sysfs / "class" / "hwmon").glob("hwmon*")):
        try:
            name = roots.read(chip / "name")
        except OSError:
            continue
        if "fan" not in name:
            continue
        values = {}
        for key, file in (("rpm", "fan1_input"), ("pwm", "pwm1")):
            try:
                values[key] = int(roots.read(chip / file))
            except (OSError, ValueError):
                continue
        if values:
            found[name] = values
    return {"fans": found} if found else {}
