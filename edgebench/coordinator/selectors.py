"""Which devices a job may run on, and why its runs wait.

A selector (edgebench.dashboard.models.DeviceSelector) is part of the job request.
`every=False` ("any one"): each run of the matrix goes to the first idle device that
matches, decided when it is leased. `every=True`: the
matrix is repeated for every enrolled device that matches when the job is submitted, each
copy pinned to its device.
"""

from __future__ import annotations

import json
from typing import Any

from edgebench.coordinator.tables import (
    Device,
    admission_of,
    automatic_states,
    capabilities_of,
    identity_of,
    takes_work,
    trust_tier,
)
from edgebench.dashboard.models import GIB, DeviceSelector
from edgebench.engines import ENGINES


def matches(selector: DeviceSelector, device: Device) -> bool:
    """Whether the selector allows the device (what it is; what it can run is
    `can_run`)."""
    if selector.devices and device.name not in selector.devices:
        return False
    identity = identity_of(device)
    if selector.arch and identity.arch != selector.arch:
        return False
    if selector.accelerator and identity.accelerator != selector.accelerator:
        return False
    if selector.min_memory_gb is not None and identity.ram_bytes < selector.min_memory_gb * GIB:
        return False
    if selector.hardware_class and device.hardware_class != selector.hardware_class:
        return False
    if selector.tiers and trust_tier(device) not in selector.tiers:
        return False
    if selector.not_owners and (not device.owner or device.owner in selector.not_owners):
        return False
    engines = capabilities_of(device).engines
    if any(engines.get(name) != version for name, version in selector.engines.items()):
        return False
    tags = device_tags(device)
    return all(tags.get(key) == value for key, value in selector.tags.items())


def can_run(device: Device, backend: str) -> bool:
    """Whether the device reported the engine installed when it last connected."""
    return backend in capabilities_of(device).engines


def device_tags(device: Device) -> dict[str, str]:
    loaded: Any = json.loads(device.tags_json or "{}")
    return {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}


def fit_warnings(selector: DeviceSelector, backends: set[str], devices: list[Device]) -> list[str]:
    """What a job with these engines meets among the enrolled devices now. A selector
    that allows no device, or an open one ("any device") when no device has an engine,
    is a warning: the runs wait for a device that can take them. A selector that names
    devices or constraints and allows only devices without an engine is refused
    (ValueError): that choice cannot run."""
    matched = devices if selector.is_open() else [d for d in devices if matches(selector, d)]
    if not matched:
        return [f"no enrolled device matches {selector.describe()} now: its runs wait for one"]
    warnings = []
    for backend in sorted(backends):
        if any(can_run(d, backend) for d in matched):
            continue
        install = f"pip install 'edgebench[{ENGINES[backend].extra}]'"
        if selector.is_open():
            warnings.append(
                f"no enrolled device has {backend} installed now ({install} on one, then "
                "restart its agent): its runs wait for one that has"
            )
            continue
        names = ", ".join(d.name for d in matched[:5]) + (" ..." if len(matched) > 5 else "")
        raise ValueError(
            f"no device that matches {selector.describe()} can run {backend}: {names} "
            f"reported no {backend} installed ({install} there, then restart its agent)"
        )
    return warnings


def _why_idle(device: Device) -> str:
    """The weightiest reason a device takes no work, in a word."""
    admission = admission_of(device)
    if admission != "approved":
        return f"is {admission}" + (" (devices approve)" if admission == "pending" else "")
    automatic = automatic_states(device)
    return f"is {automatic[0] if automatic else device.operator_state}"


def why_waiting(
    selector: DeviceSelector, pinned: str | None, backend: str, devices: list[Device],
    online: set[str],
) -> str:  # fmt: skip
    """Why a queued run has not gone out, in words."""
    allowed = [d for d in devices if (pinned is None or d.name == pinned) and matches(selector, d)]
    wanted = f"device {pinned}" if pinned else selector.describe()
    if not allowed:
        return f"no enrolled device matches {wanted}"
    capable = [d for d in allowed if can_run(d, backend)]
    if not capable:
        return f"no device matching {wanted} has {backend} installed"
    working = [d for d in capable if takes_work(d)]
    if not working:
        states = ", ".join(f"{d.name} {_why_idle(d)}" for d in capable[:5])
        return f"no device matching {wanted} that can run {backend} takes work now ({states})"
    if not any(d.id in online for d in working):
        return f"every device matching {wanted} that can run {backend} is offline"
    return f"waiting for one of {len(capable)} matching device(s) to be idle"
