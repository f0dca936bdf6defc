"""Sources declare their own traits: what the platform is, which accelerator a selector
can ask for, whether an idle baseline is worth taking, how throttle values read. A new
source is one file: registering it is all the rest needs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from edgebench.agent.sensors import (
    accelerator_of,
    base,
    bitmask_sources,
    detect_sources,
    measures_power,
    platform_of,
    power_state,
)
from edgebench.agent.sensors.base import Reading, Roots, Traits


@dataclass
class NpuSource:
    name: str = "npu"
    interval_s: float = 0.1
    traits: ClassVar[Traits] = Traits(
        measures_power=True, throttle="bitmask", platform="rockchip", platform_rank=0,
        accelerator="npu",
    )  # fmt: skip

    def read(self) -> list[Reading]:
        return []


@pytest.fixture
def npu_registered() -> Iterator[None]:
    base.register("npu")(lambda roots: NpuSource())
    base.register_power_state("npu")(lambda roots: {"npu_governor": "performance"})
    yield
    base._REGISTRY.pop("npu")
    base._STATE_READERS.pop("npu")


def test_a_registered_source_is_all_the_sensor_layer_needs(npu_registered: None) -> None:
    roots = Roots(sysfs=Path("/nonexistent"), procfs=Path("/nonexistent"), path="")
    sources = detect_sources(roots)
    assert [s.name for s in sources] == ["npu"]
    assert platform_of(sources) == "rockchip" and accelerator_of(sources) == "npu"
    assert measures_power(sources) and bitmask_sources(sources) == {"npu"}
    assert power_state(roots)["npu_governor"] == "performance"


def test_every_source_declares_traits() -> None:
    from edgebench.agent import sensors

    modules = [sensors.cpufreq, sensors.jetson, sensors.nvml, sensors.rapl,
               sensors.raspberrypi, sensors.tegrastats, sensors.thermal]  # fmt: skip
    classes = [obj for m in modules for obj in vars(m).values()
               if isinstance(obj, type) and obj.__name__.endswith("Source")]  # fmt: skip
    assert len(classes) == 8
    for cls in classes:
        traits = getattr(cls, "traits", None)
        assert isinstance(traits, Traits), cls
        assert traits.throttle in ("counter", "bitmask")
