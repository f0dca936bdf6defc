"""The sensor layer: one module per source, each registering its detector (and, where it
has one, its reader of power settings) in `base.py`. Nothing here knows a source by
name: platform, accelerator and power state come from what the sources declare."""

from __future__ import annotations

from typing import Any

from edgebench.agent.sensors import cpufreq, jetson, nvml, rapl, raspberrypi, tegrastats, thermal
from edgebench.agent.sensors.base import (
    Reading,
    Roots,
    Source,
    Traits,
    power_state_readers,
    registered,
)
from edgebench.agent.sensors.nvml import nvml_module

_ = (cpufreq, jetson, nvml, rapl, raspberrypi, tegrastats, thermal)  # registered on import


def detect_sources(roots: Roots) -> list[Source]:
    """Every source that is present under `roots`, in registration order."""
    found = []
    for detector in registered().values():
        source = detector(roots)
        if source is not None:
            found.append(source)
    return found


def platform_of(sources: list[Source]) -> str:
    """The platform the sources imply (the lowest rank wins), else generic_linux."""
    implied = sorted((s.traits.platform_rank, s.traits.platform) for s in sources
                     if s.traits.platform)  # fmt: skip
    return implied[0][1] if implied else "generic_linux"


def accelerator_of(sources: list[Source]) -> str:
    """The accelerator kind a job's selector can ask for: "cuda" where an NVIDIA GPU
    answers (NVML, or a Jetson's integrated GPU), else "none"."""
    kinds = sorted({s.traits.accelerator for s in sources if s.traits.accelerator})
    return kinds[0] if kinds else "none"


def measures_power(sources: list[Source]) -> bool:
    """Whether any source measures power or energy (only then is an idle baseline useful)."""
    return any(s.traits.measures_power for s in sources)


def bitmask_sources(sources: list[Source]) -> frozenset[str]:
    """Sources whose throttle reading holds flags, not an event counter."""
    return frozenset(s.name for s in sources if s.traits.throttle == "bitmask")


def power_state(roots: Roots) -> dict[str, Any]:
    """Settings that change performance, for the environment snapshot: what each source
    module's reader finds (cpufreq governor, Jetson nvpmodel mode and fan profile, Pi
    clock and voltage settings, fans, GPU power limits)."""
    state: dict[str, Any] = {}
    for reader in power_state_readers().values():
        state.update(reader(roots))
    return state


__all__ = [
    "Reading",
    "Roots",
    "Source",
    "Traits",
    "accelerator_of",
    "bitmask_sources",
    "detect_sources",
    "measures_power",
    "nvml_module",
    "platform_of",
    "power_state",
]
