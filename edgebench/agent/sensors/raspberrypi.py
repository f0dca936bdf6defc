"""Raspberry Pi: throttle bits, the real ARM clock, and Pi 5 PMIC rail power.

`get_throttled` comes from the firmware sysfs node (hex without 0x) or `vcgencmd`; current
bits (0-3) and since-boot sticky bits (16-19) are decoded apart. Pi 5 power is the sum of
V x I over the PMIC rails that report both (scope pmic_rails: not wall power). Pi 4 and
older have no power sensor. `vcgencmd` is slow (~0.1 s a call), so this source is read at
most every 0.5 s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from edgebench.agent.sensors.base import (
    Reading,
    Roots,
    Traits,
    missing,
    register,
    register_power_state,
)

THROTTLE_BITS = {
    "under_voltage": 0,
    "arm_frequency_capped": 1,
    "throttled": 2,
    "soft_temperature_limit": 3,
}
STICKY_OFFSET = 16
ADC_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(current|volt)\((\d+)\)=([0-9.]+)([AV])\s*$")
FIRMWARE_NODE = ("devices", "platform", "soc", "soc:firmware", "get_throttled")


def decode_throttled(value: int) -> dict[str, bool]:
    flags = {}
    for name, bit in THROTTLE_BITS.items():
        flags[f"{name}_now"] = bool(value >> bit & 1)
        flags[f"{name}_since_boot"] = bool(value >> (bit + STICKY_OFFSET) & 1)
    return flags


def pmic_power_w(output: str) -> float | None:
    """Σ V·I over rails that have both a current and a voltage line; None if none do."""
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in output.splitlines():
        match = ADC_LINE.match(line)
        if match:
            rail, kind, value = match.group(1), match.group(2), float(match.group(5))
            (amps if kind == "A" else volts)[rail] = value
    rails = amps.keys() & volts.keys()
    return sum(amps[r] * volts[r] for r in rails) if rails else None


CLOCK_EVERY = 4  # the ARM clock (another vcgencmd call) on every 4th read: every 2 s


@dataclass
class RaspberryPiSource:
    roots: Roots
    model: str
    name: str = "raspberrypi"
    traits: ClassVar[Traits] = Traits(
        measures_power=True, throttle="bitmask", platform="raspberrypi", platform_rank=0
    )
    interval_s: float = 0.5
    _reads: int = 0

    def read(self) -> list[Reading]:
        readings = [self._throttle(), self._power()]
        if self._reads % CLOCK_EVERY == 0:
            readings.insert(1, self._clock())
        self._reads += 1
        return readings

    def _throttle(self) -> Reading:
        value = self._throttled_value()
        if value is None:
            return missing(self.name, "throttle", "get_throttled", "soc",
                           "neither the firmware node nor vcgencmd answered")  # fmt: skip
        return Reading(self.name, "throttle", "get_throttled", "soc", "", float(value),
                       flags=decode_throttled(value))  # fmt: skip

    def _throttled_value(self) -> int | None:
        try:
            return int(self.roots.read(self.roots.sysfs.joinpath(*FIRMWARE_NODE)), 16)
        except (OSError, ValueError):
            pass
        output = self.roots.run("vcgencmd", "get_throttled")
        if output and "=" in output:
            try:
                return int(output.strip().split("=", 1)[1], 16)
            except ValueError:
                return None
        return None

    def _clock(self) -> Reading:
        output = self.roots.run("vcgencmd", "measure_clock", "arm")
        try:
            hz = int(output.strip().split("=", 1)[1]) if output else None
        except (IndexError, ValueError):
            hz = None
        if hz is None:
            return missing(self.name, "frequency", "arm", "cpu_core", "vcgencmd not available")
        return Reading(self.name, "frequency", "arm", "cpu_core", "MHz", hz / 1e6)

    def _power(self) -> Reading:
        output = self.roots.run("vcgencmd", "pmic_read_adc")
        watts = pmic_power_w(output) if output else None
        if watts is None:
            reason = (f"no power sensor on this model ({self.model})" if "Pi 5" not in self.model
                      else "vcgencmd pmic_read_adc not available")  # fmt: skip
            return missing(self.name, "power", "pmic_rails", "pmic_rails", reason)
        return Reading(self.name, "power", "pmic_rails", "pmic_rails", "W", watts, primary=True)


@register("raspberrypi")
def detect(roots: Roots) -> RaspberryPiSource | None:
    try:
        model = roots.read(roots.sysfs / "firmware" / "devicetree" / "base" / "model")
    except OSError:
        return None
    model = model.strip("\x00")
    return RaspberryPiSource(roots, model) if "Raspberry Pi" in model else None


PI_CONFIG = ("arm_freq", "over_voltage", "force_turbo", "temp_soft_limit")


@register_power_state("raspberrypi")
def clock_config(roots: Roots) -> dict[str, Any]:
    """The firmware's clock and voltage settings that change performance."""
    pi_config = roots.run("vcgencmd", "get_config", "int")
    if not pi_config:
        return {}
    lines = (line.partition("=") for line in pi_config.splitlines())
    return {"pi_config": {key: value for key, _, value in lines if key in PI_CONFIG}}
