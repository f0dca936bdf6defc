"""The sensor layer: one module per source, each registering a detector here."""

from __future__ import annotations

from edgebench.agent.sensors import cpufreq, jetson, nvml, rapl, raspberrypi, tegrastats, thermal
from edgebench.agent.sensors.base import Reading, Roots, Source, registered
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
    names = {s.name for s in sources}
    if "raspberrypi" in names:
        return "raspberrypi"
    if names & {"jetson", "tegrastats"}:
        return "jetson"
    if "rapl" in names:
        return "x86_rapl"
    return "generic_linux"


def accelerator_of(sources: list[Source]) -> str:
    """The accelerator kind a job's selector can ask for: "cuda" where an NVIDIA GPU
    answers (NVML, or a Jetson's integrated GPU), else "none"."""
    names = {s.name for s in sources}
    return "cuda" if names & {"nvml", "jetson", "tegrastats"} else "none"


__all__ = ["Reading", "Roots", "Source", "accelerator_of", "detect_sources", "platform_of"]


def power_state(roots: Roots) -> dict[str, object]:
    """Settings that change performance, for the environment snapshot: cpufreq governor,
    Jetson nvpmodel mode, Pi clock and voltage settings, GPU power limits."""
    state: dict[str, object] = {}
    try:
        policy = roots.sysfs / "devices" / "system" / "cpu" / "cpu0" / "cpufreq"
        state["cpufreq_governor"] = roots.read(policy / "scaling_governor")
    except OSError:
        pass
    nvpmodel = roots.run("nvpmodel", "-q")
    if nvpmodel:
        state["nvpmodel"] = " ".join(nvpmodel.split())
    fan_profile = roots.run("nvfancontrol", "-q")  # Jetson: the active fan profile, as reported
    if fan_profile:
        state["fan_profile"] = " ".join(fan_profile.split())
    fans = _fans(roots)
    if fans:
        state["fans"] = fans
    limits = _gpu_power_limits(roots)
    if limits:
        state["gpu_power_limit_w"] = limits
    pi_config = roots.run("vcgencmd", "get_config", "int")
    if pi_config:
        wanted = ("arm_freq", "over_voltage", "force_turbo", "temp_soft_limit")
        state["pi_config"] = {
            key: value
            for key, _, value in (line.partition("=") for line in pi_config.splitlines())
            if key in wanted
        }
    return state


def _gpu_power_limits(roots: Roots) -> list[float]:
    nvml = nvml_module(roots)
    if nvml is None:
        return []
    try:
        nvml.nvmlInit()
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        return [nvml.nvmlDeviceGetPowerManagementLimit(h) / 1000.0 for h in handles]
    except Exception:  # NVML raises its own error types; a limit is optional provenance
        return []


def _fans(roots: Roots) -> dict[str, dict[str, int]]:
    """hwmon fans (Pi 5 `pwmfan`/`cooling_fan`, Jetson `pwm-fan`): speed and PWM duty."""
    fans: dict[str, dict[str, int]] = {}
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
            fans[name] = values
    return fans
