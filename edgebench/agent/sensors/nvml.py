"""NVIDIA GPUs through NVML (nvidia-ml-py): the board's total-energy counter where the GPU
has one (Volta and newer), power otherwise; temperature; SM and memory clocks; clock-event
(throttle) reasons decoded. Unsupported calls are reported missing, not zero."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from edgebench.agent.sensors.base import (
    UNITS,
    Reading,
    Roots,
    Traits,
    missing,
    register,
    register_power_state,
)

ARCH_VOLTA = 5
CLOCK_SM, CLOCK_MEM = 1, 2
REASONS = {
    "sw_power_cap": 0x004,
    "hw_slowdown": 0x008,
    "sw_thermal_slowdown": 0x020,
    "hw_thermal_slowdown": 0x040,
    "hw_power_brake_slowdown": 0x080,
}


def decode_reasons(mask: int) -> dict[str, bool]:
    flags = {name: bool(mask & bit) for name, bit in REASONS.items()}
    flags["thermal"] = flags["sw_thermal_slowdown"] or flags["hw_thermal_slowdown"]
    flags["power"] = flags["sw_power_cap"] or flags["hw_power_brake_slowdown"]
    return flags


# The total-energy counter costs the driver about 4 ms of CPU per query on an H100, every
# other query about 1 us (benchmarks/RESULTS.md). So the counter is its own source, read
# once a second and at every run and phase boundary (the sampler forces those reads); the
# rest is read at the sampler's rate. Both are named "nvml": in the energy maths a
# source's counter wins over its power readings, so the GPU is never counted twice.
ENERGY_INTERVAL_S = 1.0

Gpu = tuple[str, Any, bool]  # (name, NVML handle, has a total-energy counter)


@dataclass
class NvmlSource:
    """Board power, temperature, SM and memory clocks, clock-event reasons."""

    nvml: Any
    handles: list[Gpu]
    name: str = "nvml"
    interval_s: float = 0.1
    traits: ClassVar[Traits] = Traits(measures_power=True, throttle="bitmask", accelerator="cuda")

    def read(self) -> list[Reading]:
        readings = []
        for gpu, handle, _ in self.handles:
            board = self._power(gpu, handle)
            readings.append(replace(board, primary=board.status == "ok"))
            readings.extend(self._details(gpu, handle))
        return readings

    def _details(self, gpu: str, handle: Any) -> list[Reading]:
        return [
            self._call(gpu, "temperature", "gpu", handle, self._temperature),
            self._call(f"{gpu}/sm", "frequency", "gpu", handle, self._sm_clock),
            self._call(f"{gpu}/mem", "frequency", "gpu_memory", handle, self._mem_clock),
            self._throttle(gpu, handle),
        ]

    def _power(self, gpu: str, handle: Any) -> Reading:
        get = self.nvml.nvmlDeviceGetPowerUsage
        return self._call(gpu, "power", "gpu_board", handle, lambda h: get(h) / 1e3)

    def _sm_clock(self, handle: Any) -> float:
        return float(self.nvml.nvmlDeviceGetClockInfo(handle, CLOCK_SM))

    def _mem_clock(self, handle: Any) -> float:
        return float(self.nvml.nvmlDeviceGetClockInfo(handle, CLOCK_MEM))

    def _temperature(self, handle: Any) -> float:
        getter = getattr(self.nvml, "nvmlDeviceGetTemperatureV", None)
        if getter is not None:
            return float(getter(handle, 0))
        return float(self.nvml.nvmlDeviceGetTemperature(handle, 0))

    def _call(self, name: str, kind: str, scope: str, handle: Any, get: Any) -> Reading:
        try:
            value = float(get(handle))
        except self.nvml.NVMLError as exc:
            return missing(self.name, kind, name, scope, f"not supported by this GPU ({exc})")
        return Reading(self.name, kind, name, scope, UNITS[kind], value)

    def _throttle(self, gpu: str, handle: Any) -> Reading:
        getter = (
            getattr(self.nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
            or self.nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        )
        try:
            mask = int(getter(handle))
        except self.nvml.NVMLError as exc:
            return missing(self.name, "throttle", gpu, "gpu", f"not supported ({exc})")
        return Reading(self.name, "throttle", gpu, "gpu", "", float(mask),
                       flags=decode_reasons(mask))  # fmt: skip


def nvml_module(roots: Roots) -> Any:
    """The NVML module to ask: the one injected, else nvidia-ml-py, but only when the roots
    are this machine's own (a fixture tree under another sysfs root is another machine,
    whose readings must not mix with this one's GPU)."""
    if roots.nvml is not None:
        return roots.nvml
    if roots.sysfs != Path("/sys"):
        return None
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return None
    return pynvml


@dataclass
class NvmlEnergySource:
    """The board's total-energy counter (Volta and newer), preferred over integrating power."""

    nvml: Any
    handles: list[Gpu]
    name: str = "nvml"
    interval_s: float = ENERGY_INTERVAL_S
    traits: ClassVar[Traits] = Traits(measures_power=True, accelerator="cuda")

    def read(self) -> list[Reading]:
        readings = []
        for gpu, handle, _ in self.handles:
            energy = self._energy(gpu, handle)
            readings.append(replace(energy, primary=energy.status == "ok"))
        return readings

    def _energy(self, gpu: str, handle: Any) -> Reading:
        get = self.nvml.nvmlDeviceGetTotalEnergyConsumption  # mJ since the driver loaded
        try:
            value = get(handle) / 1e3
        except self.nvml.NVMLError as exc:
            return missing(self.name, "energy", gpu, "gpu_board", f"not supported ({exc})")
        return Reading(self.name, "energy", gpu, "gpu_board", UNITS["energy"], value)


@register("nvml")
def detect(roots: Roots) -> NvmlSource | None:
    found = _gpus(roots)
    return NvmlSource(*found) if found else None


@register("nvml_energy")
def detect_energy(roots: Roots) -> NvmlEnergySource | None:
    found = _gpus(roots)
    if not found:
        return None
    nvml, handles = found
    counters = [gpu for gpu in handles if gpu[2]]
    return NvmlEnergySource(nvml, counters) if counters else None


def _gpus(roots: Roots) -> tuple[Any, list[Gpu]] | None:
    nvml = nvml_module(roots)
    if nvml is None:
        return None
    try:
        nvml.nvmlInit()
        count = int(nvml.nvmlDeviceGetCount())
    except Exception:  # no driver, no GPU: NVML raises its own error types
        return None
    handles = []
    for index in range(count):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        try:
            has_energy = int(nvml.nvmlDeviceGetArchitecture(handle)) >= ARCH_VOLTA
        except nvml.NVMLError:
            has_energy = False
        handles.append((f"gpu{index}", handle, has_energy))
    return (nvml, handles) if handles else None


@register_power_state("nvml")
def power_limits(roots: Roots) -> dict[str, Any]:
    """Each NVIDIA GPU's power limit in W."""
    nvml = nvml_module(roots)
    if nvml is None:
        return {}
    try:
        nvml.nvmlInit()
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        limits = [nvml.nvmlDeviceGetPowerManagementLimit(h) / 1000.0 for h in handles]
    except Exception:  # NVML raises its own error types; a limit is optional provenance
        return {}
    return {"gpu_power_limit_w": limits} if limits else {}
