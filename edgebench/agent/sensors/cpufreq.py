"""CPU clocks from cpufreq (`scaling_cur_freq` against `cpuinfo_max_freq`, kHz) and
Intel's `thermal_throttle` counters (events since boot; absent on AMD and most VMs)."""

from __future__ import annotations

from dataclasses import dataclass, field
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

THROTTLE_FILES = ("core_throttle_count", "package_throttle_count")


@dataclass
class CpufreqSource:
    roots: Roots
    cpus: list[Path]  # cpu<N> directories with cpufreq/
    throttle_cpus: list[Path]  # cpu<N> directories with thermal_throttle/
    name: str = "cpufreq"
    traits: ClassVar[Traits] = Traits()
    interval_s: float = 0.1
    _max_mhz: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for cpu in self.cpus:
            try:
                khz = int(self.roots.read(cpu / "cpufreq" / "cpuinfo_max_freq"))
            except (OSError, ValueError):
                continue
            self._max_mhz[cpu.name] = khz / 1000.0

    def read(self) -> list[Reading]:
        readings = [self._clock(cpu) for cpu in self.cpus]
        if self.throttle_cpus:
            readings.append(self._throttle())
        return readings

    def _clock(self, cpu: Path) -> Reading:
        try:
            mhz = int(self.roots.read(cpu / "cpufreq" / "scaling_cur_freq")) / 1000.0
        except (OSError, ValueError) as exc:
            reason = reason_of(exc) if isinstance(exc, OSError) else "unreadable value"
            return missing(self.name, "frequency", cpu.name, "cpu_core", reason)
        return Reading(self.name, "frequency", cpu.name, "cpu_core", "MHz", mhz,
                       maximum=self._max_mhz.get(cpu.name))  # fmt: skip

    def _throttle(self) -> Reading:
        """Sum of core counts over CPUs and package counts once per package."""
        core = package = 0
        packages: set[str] = set()
        for cpu in self.throttle_cpus:
            folder = cpu / "thermal_throttle"
            try:
                core += int(self.roots.read(folder / "core_throttle_count"))
                package_id = self._package_id(cpu)
                if package_id not in packages:
                    packages.add(package_id)
                    package += int(self.roots.read(folder / "package_throttle_count"))
            except (OSError, ValueError):
                return missing(self.name, "throttle", "thermal_throttle", "cpu_package",
                               "thermal_throttle counters unreadable")  # fmt: skip
        return Reading(self.name, "throttle", "thermal_throttle", "cpu_package", "",
                       float(core + package),
                       flags={"core_throttle_events": core > 0,
                              "package_throttle_events": package > 0})  # fmt: skip

    def _package_id(self, cpu: Path) -> str:
        try:
            return self.roots.read(cpu / "topology" / "physical_package_id")
        except OSError:
            return "0"


@register("cpufreq")
def detect(roots: Roots) -> CpufreqSource | None:
    base = roots.sysfs / "devices" / "system" / "cpu"
    if not base.is_dir():
        return None
    cpus = sorted((p for p in base.glob("cpu[0-9]*") if (p / "cpufreq").is_dir()),
                  key=lambda p: int(p.name[3:]))  # fmt: skip
    throttled = sorted((p for p in base.glob("cpu[0-9]*") if (p / "thermal_throttle").is_dir()),
                       key=lambda p: int(p.name[3:]))  # fmt: skip
    if not cpus and not throttled:
        return None
    return CpufreqSource(roots, cpus, throttled)


@register_power_state("cpufreq")
def governor(roots: Roots) -> dict[str, Any]:
    """The cpufreq governor (performance, powersave, ondemand...) of the first CPU."""
    policy = roots.sysfs / "devices" / "system" / "cpu" / "cpu0" / "cpufreq"
    try:
        return {"cpufreq_governor": roots.read(policy / "scaling_governor")}
    except OSError:
        return {}
