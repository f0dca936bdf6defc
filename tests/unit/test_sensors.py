"""The real readers against fixture trees of real devices (and captured tool outputs
behind scripts put first on PATH)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edgebench.agent.sensors import Roots, accelerator_of, detect_sources, platform_of
from edgebench.agent.sensors.base import Reading, read_text
from edgebench.agent.sensors.nvml import NvmlEnergySource, NvmlSource, decode_reasons
from edgebench.agent.sensors.nvml import detect as detect_nvml
from edgebench.agent.sensors.nvml import detect_energy as detect_nvml_energy
from edgebench.agent.sensors.rapl import detect as detect_rapl
from edgebench.agent.sensors.rapl import wrapped_delta
from edgebench.agent.sensors.raspberrypi import decode_throttled, pmic_power_w
from edgebench.measure.energy import EnergyTimeline
from edgebench.measure.readings import Sample

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def roots_for(device: str, **kw: Any) -> Roots:
    tools = FIXTURES / device / "bin"
    path = f"{tools}{os.pathsep}/usr/bin:/bin" if tools.is_dir() else "/usr/bin:/bin"
    return Roots(
        sysfs=FIXTURES / device / "sys", procfs=FIXTURES / device / "proc", path=path, **kw
    )


def readings(device: str, **kw: Any) -> dict[tuple[str, str], Reading]:
    found = [r for s in detect_sources(roots_for(device, **kw)) for r in s.read()]
    return {(r.source, r.name): r for r in found}


def test_intel_desktop_rapl_zones_by_name_without_duplicates() -> None:
    found = readings("intel_desktop")
    rapl = {name: r for (source, name), r in found.items() if source == "rapl"}
    assert sorted(rapl) == ["core", "package-0", "psys"]  # intel-rapl-mmio package-0 read once
    assert rapl["package-0"].scope == "cpu_package" and rapl["package-0"].primary
    assert rapl["core"].scope == "cpu_core" and not rapl["core"].primary  # a subset: never summed
    assert rapl["psys"].scope == "platform" and not rapl["psys"].primary
    assert rapl["package-0"].value == pytest.approx(240422.366267) and rapl["package-0"].unit == "J"
    clock = found[("cpufreq", "cpu0")]
    assert clock.value == pytest.approx(1699.981) and clock.unit == "MHz"
    throttle = found[("cpufreq", "thermal_throttle")]
    assert throttle.value == 5 + 30  # core counts summed, the package count once per package
    assert found[("thermal", "x86_pkg_temp")].value == 55.0
    assert found[("thermal", "coretemp/Package id 0")].unit == "C"


def test_rapl_counter_wraps_between_reads(tmp_path: Path) -> None:
    tree = tmp_path / "sys"
    shutil.copytree(FIXTURES / "intel_desktop" / "sys", tree, symlinks=True)
    energy = tree / "class" / "powercap" / "intel-rapl:0" / "energy_uj"
    source = detect_rapl(Roots(sysfs=tree))
    assert source is not None
    energy.write_text("262143000000\n")  # 328850 uJ before the top of the range
    first = {r.name: r for r in source.read()}["package-0"].value
    energy.write_text("671150\n")  # wrapped: 328850 + 671150 = 1000000 uJ later
    second = {r.name: r for r in source.read()}["package-0"].value
    assert first is not None and second is not None
    assert second - first == pytest.approx(1.0)
    assert wrapped_delta(100, 50, 1000) == 950 and wrapped_delta(50, 100, 1000) == 50


def test_amd_range_and_hwmon() -> None:
    found = readings("amd_desktop")
    assert found[("rapl", "package-0")].status == "ok"
    assert found[("thermal", "k10temp/Tctl")].value == 61.25
    assert platform_of(detect_sources(roots_for("amd_desktop"))) == "x86_rapl"


def test_root_only_energy_is_missing_with_the_reason() -> None:
    def deny_energy(path: Path) -> str:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return read_text(path)

    found = readings("intel_desktop", reader=deny_energy)
    package = found[("rapl", "package-0")]
    assert package.status == "missing" and package.value is None
    assert "permission denied" in package.reason and "root" in package.reason


def test_raspberry_pi_4_throttle_bits_and_no_power_sensor() -> None:
    found = readings("raspberrypi4")
    throttle = found[("raspberrypi", "get_throttled")]
    assert throttle.value == 0x50005  # from the sysfs node, hex without 0x
    assert throttle.flags is not None
    assert throttle.flags["under_voltage_now"] and throttle.flags["throttled_now"]
    assert throttle.flags["under_voltage_since_boot"] and throttle.flags["throttled_since_boot"]
    assert not throttle.flags["arm_frequency_capped_now"]
    assert found[("raspberrypi", "arm")].value == pytest.approx(700.154304)  # the real clock
    power = found[("raspberrypi", "pmic_rails")]
    assert power.status == "missing" and "no power sensor" in power.reason


def test_raspberry_pi_5_pmic_rails_power() -> None:
    found = readings("raspberrypi5")
    power = found[("raspberrypi", "pmic_rails")]
    capture = (FIXTURES / "raspberrypi5" / "pmic_read_adc.txt").read_text()
    assert power.value == pytest.approx(pmic_power_w(capture))
    # 12 rails have both V and I; EXT5V_V and BATT_V carry no current and add nothing
    assert power.value == pytest.approx(1.7672, abs=1e-3)
    assert power.scope == "pmic_rails" and power.unit == "W" and power.primary
    assert found[("raspberrypi", "get_throttled")].value == 0  # vcgencmd fallback (no node)
    assert decode_throttled(0x80000)["soft_temperature_limit_since_boot"]


def test_jetson_orin_hwmon_rails_input_rail_is_the_total() -> None:
    found = readings("jetson_orin_jp6")
    vin = found[("jetson", "VDD_IN")]
    assert vin.value == pytest.approx(5.072 * 1.312) and vin.scope == "module_input"
    assert vin.primary
    cpu = found[("jetson", "VDD_CPU_GPU_CV")]
    assert cpu.value == pytest.approx(5.080 * 0.095) and not cpu.primary  # a sub-rail
    assert ("jetson", "Sum of shunt voltages") not in found
    assert found[("jetson", "gpu")].value == 306.0
    assert found[("thermal", "gpu-thermal")].status == "missing"  # -256 C: offline
    assert found[("jetson", "over_current")].value == 0


def test_jetson_nano_iio_rails_in_milliwatts() -> None:
    found = readings("jetson_nano_jp4")
    assert found[("jetson", "POM_5V_IN")].value == pytest.approx(0.933)
    assert found[("jetson", "POM_5V_IN")].primary
    assert found[("jetson", "POM_5V_CPU")].value == pytest.approx(0.084)
    assert ("thermal", "PMIC-Die") not in found  # a constant placeholder
    assert found[("jetson", "gpu")].value == pytest.approx(76.8)


def test_machine_without_sensors() -> None:
    assert detect_sources(roots_for("no_sensors")) == []


class FakeNvml:
    """Stands in for nvidia-ml-py where no GPU exists (recorded shapes of its answers)."""

    class NVMLError(Exception):
        pass

    def __init__(self, arch: int, energy_mj: int = 123_456_789) -> None:
        self.arch, self.energy_mj = arch, energy_mj
        self.processes: list[SimpleNamespace] = []  # nvmlDeviceGetComputeRunningProcesses

    def nvmlInit(self) -> None:
        return None  # the fake needs no setup

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, i: int) -> str:
        return f"h{i}"

    def nvmlDeviceGetArchitecture(self, h: str) -> int:
        return self.arch

    def nvmlDeviceGetTotalEnergyConsumption(self, h: str) -> int:
        return self.energy_mj

    def nvmlDeviceGetPowerUsage(self, h: str) -> int:
        return 71_500

    def nvmlDeviceGetTemperatureV(self, h: str, sensor: int) -> int:
        return 64

    def nvmlDeviceGetClockInfo(self, h: str, clock: int) -> int:
        if clock == 2:
            raise self.NVMLError("Not Supported")
        return 1410

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: str) -> int:
        return 0x004 | 0x040

    def nvmlDeviceGetPowerManagementLimit(self, h: str) -> int:
        return 300_000

    def nvmlDeviceGetComputeRunningProcesses(self, h: str) -> list[SimpleNamespace]:
        return self.processes


def test_nvml_energy_counter_power_and_reasons() -> None:
    roots = Roots(nvml=FakeNvml(arch=7))
    gpu, counter = detect_nvml(roots), detect_nvml_energy(roots)
    assert isinstance(gpu, NvmlSource) and isinstance(counter, NvmlEnergySource)
    assert counter.interval_s >= 1.0 > gpu.interval_s  # the counter query is the costly one
    found = {(r.kind, r.name): r for r in gpu.read() + counter.read()}
    energy = found[("energy", "gpu0")]
    assert energy.value == pytest.approx(123456.789) and energy.scope == "gpu_board"
    assert found[("power", "gpu0")].value == 71.5 and energy.primary
    assert found[("temperature", "gpu0")].value == 64
    assert found[("frequency", "gpu0/sm")].value == 1410
    memory = found[("frequency", "gpu0/mem")]
    assert memory.status == "missing" and "not supported" in memory.reason
    flags = found[("throttle", "gpu0")].flags
    assert flags is not None and flags["power"] and flags["thermal"] and not flags["hw_slowdown"]
    pascal = Roots(nvml=FakeNvml(arch=4))
    assert detect_nvml_energy(pascal) is None  # no energy counter before Volta
    assert detect_nvml(pascal) is not None
    assert decode_reasons(0x001) == {k: False for k in decode_reasons(0)}  # idle is no throttle


def test_gpu_energy_comes_from_the_counter_not_also_from_power() -> None:
    roots = Roots(nvml=FakeNvml(arch=9))
    gpu, counter = detect_nvml(roots), detect_nvml_energy(roots)
    assert gpu is not None and isinstance(counter, NvmlEnergySource)
    samples = []
    for t, joules in ((0, 100.0), (1_000_000_000, 150.0)):
        counter.nvml.energy_mj = int(joules * 1000)
        samples += [Sample(t, r) for r in gpu.read() + counter.read()]
    timeline = EnergyTimeline.of(samples)
    assert timeline.between(0, 1_000_000_000) == pytest.approx(50.0)  # not 50 + 71.5


def test_a_fixture_tree_never_reads_this_machine_nvml() -> None:
    """On a GPU machine the real NVML answers; a tree under another sysfs root is another
    machine, so only an injected NVML module is asked there."""
    from edgebench.agent.sensors.nvml import nvml_module

    assert nvml_module(roots_for("no_sensors")) is None
    fake = FakeNvml(arch=9)
    assert nvml_module(replace(roots_for("no_sensors"), nvml=fake)) is fake


def test_gpu_memory_is_this_process_share_or_unknown() -> None:
    from edgebench.agent.memory import gpu_memory_mb

    nvml = FakeNvml(arch=9)
    nvml.processes = [
        SimpleNamespace(pid=os.getpid(), usedGpuMemory=600 * 2**20),
        SimpleNamespace(pid=os.getpid() + 1, usedGpuMemory=9000 * 2**20),
    ]
    assert gpu_memory_mb(nvml) == 600.0  # another process's memory is not ours
    nvml.processes = []
    assert gpu_memory_mb(nvml) is None  # NVML cannot name us (containers): unknown, not 0
    nvml.processes = [SimpleNamespace(pid=os.getpid(), usedGpuMemory=None)]
    assert gpu_memory_mb(nvml) is None
    assert gpu_memory_mb(None) is None


def test_probe_json_through_the_cli() -> None:
    env = {
        **os.environ,
        "PATH": f"{FIXTURES / 'raspberrypi5' / 'bin'}{os.pathsep}{os.environ['PATH']}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "edgebench", "agent", "probe", "--json",
         "--sysfs-root", str(FIXTURES / "raspberrypi5" / "sys")],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert report["platform"] == "raspberrypi"
    kinds = {s["kind"] for s in report["sensors"]}
    assert kinds == {"power", "throttle", "frequency", "temperature"}
    for sensor in report["sensors"]:
        assert set(sensor) >= {
            "source",
            "kind",
            "name",
            "scope",
            "unit",
            "value",
            "status",
            "reason",
        }
        assert sensor["unit"] in {"J", "W", "C", "MHz", ""}
    throttle = next(s for s in report["sensors"] if s["kind"] == "throttle")
    assert set(throttle["flags"]) >= {"under_voltage_now", "under_voltage_since_boot"}


def test_tegrastats_lines_of_every_jetpack() -> None:
    from edgebench.agent.sensors.tegrastats import parse_rails

    jp4 = "APE 25 PLL@20.5C CPU@23.5C PMIC@100C POM_5V_IN 933/933 POM_5V_GPU 0/0 POM_5V_CPU 84/105"
    assert parse_rails(jp4) == {"POM_5V_IN": 0.933, "POM_5V_GPU": 0.0, "POM_5V_CPU": 0.084}
    jp6 = "tj@48.6C VDD_IN 4556mW/4556mW VDD_CPU_GPU_CV 483mW/483mW VDD_SOC 1451mW/1451mW"
    assert parse_rails(jp6)["VDD_IN"] == 4.556
    jp7 = "gpu@47.625C/47.625C VDD_GPU_SOC 5139mW/5139mW/5139mW VIN_SYS_5V0 5500mW/5500mW/5500mW"
    assert parse_rails(jp7) == {"VDD_GPU_SOC": 5.139, "VIN_SYS_5V0": 5.5}


def test_tegrastats_fallback_sums_rails_without_an_input_rail() -> None:
    import time

    sources = detect_sources(roots_for("jetson_agx_orin_tegrastats"))
    source = next(s for s in sources if s.name == "tegrastats")
    try:
        deadline = time.monotonic() + 5
        rails: list[Reading] = []
        while not rails or rails[0].status != "ok":
            assert time.monotonic() < deadline
            time.sleep(0.05)
            rails = source.read()
        names = {r.name: r for r in rails}
        assert "NC" not in names and names["VDD_GPU_SOC"].value == 2.39
        assert all(r.primary for r in rails)  # no input rail: every rail counts
        assert platform_of(sources) == "jetson"
    finally:
        source.close()  # type: ignore[attr-defined]


def test_power_state_for_the_environment_snapshot() -> None:
    from edgebench.agent.sensors import power_state

    state = power_state(roots_for("intel_desktop", nvml=FakeNvml(arch=8)))
    assert state["cpufreq_governor"] == "powersave" and state["gpu_power_limit_w"] == [300.0]


def test_power_state_of_jetson_and_pi() -> None:
    from edgebench.agent.sensors import power_state

    jetson = power_state(roots_for("jetson_orin_jp6"))
    assert jetson["nvpmodel"] == "NV Power Mode: 15W 0"
    assert jetson["fan_profile"] == "FAN_DEFAULT_PROFILE:quiet"
    pi = power_state(roots_for("raspberrypi5"))
    assert pi["fans"] == {"pwmfan": {"rpm": 2912, "pwm": 75}}


@pytest.mark.parametrize(
    ("roots", "kind"),
    [
        (roots_for("jetson_orin_jp6"), "cuda"),
        (roots_for("intel_desktop", nvml=FakeNvml(arch=9)), "cuda"),
        (roots_for("intel_desktop"), "none"),
        (roots_for("raspberrypi5"), "none"),
    ],
)
def test_accelerator_kind_for_device_selectors(roots: Roots, kind: str) -> None:
    assert accelerator_of(detect_sources(roots)) == kind
