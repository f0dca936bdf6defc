"""NVIDIA Jetson: INA3221 rail power, GPU clock and over-current throttle counters.

JetPack 5+ (mainline `ina3221` hwmon): `in<k>_label`, `in<k>_input` (bus mV) and
`curr<k>_input` (mA), so P = V x I. JetPack 4 (`ina3221x` iio): `rail_name_<k>` and
`in_power<k>_input` (mW). `NC` rails and the sum-of-shunts channel are skipped. The
module-input rail (VDD_IN, POM_5V_IN) is the total where there is one, and the other rails
(subsets of it) never count toward the total; otherwise the rails are summed.
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

INPUT_RAILS = {"VDD_IN", "POM_5V_IN"}
GPU_NODES = {"gv11b", "gp10b", "ga10b", "gb10b", "gpu"}


@dataclass(frozen=True)
class Rail:
    name: str
    power_mw: Path | None  # iio form
    volt_mv: Path | None  # hwmon form
    curr_ma: Path | None


@dataclass
class JetsonSource:
    roots: Roots
    rails: list[Rail]
    gpu: Path | None  # devfreq node
    oc_counters: list[Path]
    name: str = "jetson"
    traits: ClassVar[Traits] = Traits(
        measures_power=True, platform="jetson", platform_rank=1, accelerator="cuda"
    )
    interval_s: float = 0.1

    def read(self) -> list[Reading]:
        has_input = any(r.name in INPUT_RAILS for r in self.rails)
        readings = []
        for rail in self.rails:
            is_input = rail.name in INPUT_RAILS
            scope = "module_input" if is_input else "rail"
            primary = is_input or not has_input
            readings.append(self._rail(rail, scope, primary))
        if self.gpu is not None:
            readings.append(self._gpu_clock(self.gpu))
        if self.oc_counters:
            readings.append(self._over_current())
        return readings

    def _rail(self, rail: Rail, scope: str, primary: bool) -> Reading:
        try:
            if rail.power_mw is not None:
                watts = int(self.roots.read(rail.power_mw)) / 1000.0
            else:
                assert rail.volt_mv is not None and rail.curr_ma is not None
                millivolts = int(self.roots.read(rail.volt_mv))
                milliamps = int(self.roots.read(rail.curr_ma))
                watts = millivolts * milliamps / 1e6
        except (OSError, ValueError) as exc:
            reason = reason_of(exc) if isinstance(exc, OSError) else "unreadable value"
            return missing(self.name, "power", rail.name, scope, reason)
        return Reading(self.name, "power", rail.name, scope, "W", watts, primary=primary)

    def _gpu_clock(self, node: Path) -> Reading:
        try:
            mhz = int(self.roots.read(node / "cur_freq")) / 1e6
        except (OSError, ValueError):
            return missing(self.name, "frequency", "gpu", "gpu", "devfreq cur_freq unreadable")
        try:
            ceiling: float | None = int(self.roots.read(node / "max_freq")) / 1e6
        except (OSError, ValueError):
            ceiling = None
        return Reading(self.name, "frequency", "gpu", "gpu", "MHz", mhz, maximum=ceiling)

    def _over_current(self) -> Reading:
        total = 0
        for counter in self.oc_counters:
            try:
                total += int(self.roots.read(counter))
            except (OSError, ValueError):
                return missing(self.name, "throttle", "over_current", "module_input",
                               "over-current counters unreadable")  # fmt: skip
        return Reading(self.name, "throttle", "over_current", "module_input", "", float(total),
                       flags={"over_current_events": total > 0})  # fmt: skip


def _hwmon_rails(roots: Roots, folder: Path) -> list[Rail]:
    rails = []
    for label in sorted(folder.glob("in*_label")):
        index = label.name[2:].split("_")[0]
        name = roots.read(label)
        volt, curr = folder / f"in{index}_input", folder / f"curr{index}_input"
        if "NC" in name.split() or "sum" in name.lower() or not curr.exists():
            continue
        rails.append(Rail(name, None, volt, curr))
    return rails


def _iio_rails(roots: Roots, folder: Path) -> list[Rail]:
    rails = []
    for label in sorted(folder.glob("rail_name_*")):
        index = label.name.rsplit("_", 1)[1]
        name = roots.read(label)
        power = folder / f"in_power{index}_input"
        if name != "NC" and power.exists():
            rails.append(Rail(name, power, None, None))
    return rails


def _gpu_devfreq(roots: Roots) -> Path | None:
    for node in sorted((roots.sysfs / "class" / "devfreq").glob("*")):
        try:
            if roots.read(node / "device" / "of_node" / "name").strip("\x00") in GPU_NODES:
                return node
        except OSError:
            continue
    return None


@register("jetson")
def detect(roots: Roots) -> JetsonSource | None:
    drivers = roots.sysfs / "bus" / "i2c" / "drivers"
    rails: list[Rail] = []
    counters: list[Path] = []
    for hwmon in sorted(drivers.glob("ina3221/*/hwmon/hwmon*")):
        rails += _hwmon_rails(roots, hwmon)
        counters += sorted(hwmon.glob("oc*_event_cnt"))
    for iio in sorted(drivers.glob("ina3221x/*/iio:device*")):
        rails += _iio_rails(roots, iio)
    if not rails:
        return None
    return JetsonSource(roots, rails, _gpu_devfreq(roots), counters)


@register_power_state("jetson")
def power_mode(roots: Roots) -> dict[str, Any]:
    """The nvpmodel power mode and the active fan profile, as the tools report them."""
    state: dict[str, Any] = {}
    nvpmodel = roots.run("nvpmodel", "-q")
    if nvpmodel:
        state["nvpmodel"] = " ".join(nvpmodel.split())
    fan_profile = roots.run("nvfancontrol", "-q")
    if fan_profile:
        state["fan_profile"] = " ".join(fan_profile.split())
    return state
