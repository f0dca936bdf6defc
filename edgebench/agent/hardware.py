"""The hardware and software snapshot an agent sends when it enrolls and connects."""

from __future__ import annotations

import platform
import socket
from pathlib import Path

import psutil

from edgebench import __version__
from edgebench.agent.backends import installed_engines
from edgebench.agent.sensors import Roots, accelerator_of, detect_sources
from edgebench.device import MAX_TEXT, DeviceCapabilities, DeviceIdentity, HardwareInfo


def _cpu_model(procfs: Path) -> str:
    try:
        for line in (procfs / "cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_bytes(sysfs: Path) -> int:
    """The CPU's last-level cache (the highest level cpu0 reports), 0 when unknown."""
    levels: dict[int, int] = {}
    for index in (sysfs / "devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level = int((index / "level").read_text())
            size = (index / "size").read_text().strip().upper()
        except (OSError, ValueError):
            continue
        factor = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(size[-1:], 1)
        digits = size.rstrip("KMG")
        if digits.isdigit():
            levels[level] = max(levels.get(level, 0), int(digits) * factor)
    return levels[max(levels)] if levels else 0


def _os_release(etc: Path) -> str:
    try:
        for line in (etc / "os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.partition("=")[2].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def snapshot(
    procfs: Path = Path("/proc"), etc: Path = Path("/etc"), sysfs: Path = Path("/sys")
) -> HardwareInfo:
    freq = psutil.cpu_freq()
    identity = DeviceIdentity(
        hostname=socket.gethostname()[:MAX_TEXT],
        cpu_model=_cpu_model(procfs)[:MAX_TEXT],
        cpu_cores_physical=psutil.cpu_count(logical=False) or 0,
        cpu_cores_logical=psutil.cpu_count(logical=True) or 0,
        cpu_max_mhz=float(freq.max) if freq and freq.max else 0.0,
        ram_bytes=psutil.virtual_memory().total,
        os=platform.system(),
        arch=platform.machine(),
        accelerator=accelerator_of(detect_sources(Roots(procfs=procfs))),
        cache_bytes=min(_cache_bytes(sysfs), 1 << 40),
    )
    capabilities = DeviceCapabilities(
        engines=installed_engines(),
        kernel=platform.release()[:MAX_TEXT],
        os_release=_os_release(etc)[:MAX_TEXT],
        python_version=platform.python_version(),
        edgebench_version=__version__,
    )
    return HardwareInfo(identity=identity, capabilities=capabilities)
