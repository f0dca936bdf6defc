"""What a benchmark measures and how: the one home of every workload setting.

A `Workload` is four small models: the test matrix (lengths and depths), the repetition
policy, the sensor policy and the engine settings. Each field is defined once, with its
default, bounds and help text; the CLI options of `bench` and `jobs submit`, a job's JSON
body, the protobuf messages and the agent's run spec are all derived from these models.
Field names are unique across the four, so a workload also reads and writes as one flat
mapping of stable names (`Workload.from_flat`, `Workload.flat`)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_TOKENS = 131_072
MAX_SIZES = 16  # values per size list


class FlashAttention(str, Enum):
    """llama.cpp's flash attention: `auto` lets the engine decide per device."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _sizes(default: int, low: int, what: str) -> Any:
    return Field(
        default_factory=lambda: [default],
        min_length=1,
        max_length=MAX_SIZES,
        description=f"{what}, e.g. {default},{default * 4}.",
    )


class TestMatrix(_Section):
    """The tests: every (depth, prompt, generation) combination of these lists."""

    __test__: ClassVar[bool] = False  # not a pytest class

    n_prompt: list[int] = _sizes(64, 1, "Prompt lengths in tokens")
    n_gen: list[int] = _sizes(64, 2, "Generated tokens per repetition (EOS ignored)")
    n_depth: list[int] = Field(
        default_factory=lambda: [0],
        min_length=1,
        max_length=MAX_SIZES,
        description="Context already in the cache before the prompt, e.g. 0,512.",
    )

    @field_validator("n_prompt", "n_gen", "n_depth")
    @classmethod
    def _in_range(cls, values: list[int], info: Any) -> list[int]:
        low = {"n_prompt": 1, "n_gen": 2, "n_depth": 0}[info.field_name]
        if any(not low <= v <= MAX_TOKENS for v in values):
            why = " (decode speed needs two)" if info.field_name == "n_gen" else ""
            raise ValueError(f"every value must be between {low} and {MAX_TOKENS}{why}")
        return values

    def tests(self) -> list[Test]:
        return [
            Test(n_prompt=p, n_gen=g, n_depth=d)
            for d, p, g in itertools.product(self.n_depth, self.n_prompt, self.n_gen)
        ]

    def largest(self) -> int:
        """Tokens the largest test holds: depth + prompt + generation."""
        return max(self.n_depth) + max(self.n_prompt) + max(self.n_gen)


class Repetitions(_Section):
    """How often each test runs, and when `auto` stops."""

    reps: int = Field(
        default=5, ge=0, le=1000, description="Repetitions; 0 = auto (until the decode ci95 "
        "is within the target)."
    )  # fmt: skip
    warmup: int = Field(default=1, ge=0, le=100, description="Warm-up repetitions (discarded).")
    min_reps: int = Field(default=3, ge=2, le=1000, description="With auto: the fewest reps.")
    max_reps: int = Field(default=30, ge=2, le=1000, description="With auto: the most reps.")
    max_seconds: float = Field(
        default=300.0, gt=0, le=86400, description="With auto: the longest time per test."
    )
    target_ci: float = Field(
        default=0.02, ge=0, le=1, description="With auto: stop once ci95 / mean is below this."
    )
    sustained_seconds: float = Field(
        default=0.0, ge=0, le=86400, description="Generate back to back for this long and "
        "report stability; 0 = off."
    )  # fmt: skip
    window_seconds: float = Field(
        default=5.0, gt=0, le=3600, description="Sustained mode: window length."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Repetitions:
        if self.reps == 0 and self.min_reps > self.max_reps:
            raise ValueError("auto repetitions need min_reps <= max_reps")
        if self.sustained_seconds and self.sustained_seconds < 2 * self.window_seconds:
            raise ValueError("a sustained run needs at least two windows")
        return self


class SensorPolicy(_Section):
    """How the device is watched around the measurement."""

    sample_hz: float = Field(default=10.0, gt=0, le=100, description="Sensor sampling rate.")
    idle_seconds: float = Field(
        default=2.0, ge=0, le=600, description="Idle baseline before each test (only where "
        "power is measured)."
    )  # fmt: skip
    noisy_pct: float = Field(
        default=10.0, ge=0, le=100, description="Mark a result noisy above this share of CPU "
        "used by other processes."
    )  # fmt: skip
    cooldown_c: float | None = Field(
        default=None, ge=0, le=150, description="First wait until the hottest sensor is below "
        "this temperature, e.g. 50C."
    )  # fmt: skip
    cooldown_max_seconds: float = Field(
        default=300.0, ge=0, le=7200, description="The longest cool-down wait."
    )


class EngineSettings(_Section):
    """Settings handed to the engine; each engine reads the ones it has. The llama.cpp
    defaults are llama-bench's own."""

    threads: int = Field(default=0, ge=0, le=1024, description="CPU threads; 0 = physical cores.")
    n_ctx: int = Field(
        default=0, ge=0, le=1 << 20, description="Context size in tokens; 0 = the largest "
        "test's depth + prompt + generation, rounded up to 256."
    )  # fmt: skip
    n_batch: int = Field(default=2048, ge=1, le=65536, description="llama.cpp logical batch.")
    n_ubatch: int = Field(default=512, ge=1, le=65536, description="llama.cpp physical batch.")
    n_gpu_layers: int | None = Field(
        default=None, ge=-1, le=10000, description="llama.cpp layers on the GPU; -1 = all; "
        "unset = all on a GPU build, 0 on a CPU-only one."
    )  # fmt: skip
    flash_attn: FlashAttention = Field(
        default=FlashAttention.AUTO, description="llama.cpp flash attention: on, off or auto."
    )
    repack: bool | None = Field(
        default=None, description="llama.cpp weight repacking; unset = on, off on AMX CPUs."
    )
    provider: str = Field(
        default="cpu", pattern=r"^(cpu|cuda|tensorrt|dml)$", description="ONNX Runtime "
        "execution provider (cpu, cuda, tensorrt, dml); transformers: cpu or cuda."
    )  # fmt: skip


SECTIONS: dict[str, type[_Section]] = {
    "tests": TestMatrix,
    "repetitions": Repetitions,
    "sensors": SensorPolicy,
    "engine": EngineSettings,
}
# Every workload field's section, by its stable (flat) name.
FIELD_SECTIONS: dict[str, str] = {
    name: section for section, model in SECTIONS.items() for name in model.model_fields
}


class Workload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tests: TestMatrix = Field(default_factory=TestMatrix)
    repetitions: Repetitions = Field(default_factory=Repetitions)
    sensors: SensorPolicy = Field(default_factory=SensorPolicy)
    engine: EngineSettings = Field(default_factory=EngineSettings)

    @model_validator(mode="after")
    def _context_holds_every_test(self) -> Workload:
        needed = self.tests.largest()
        if 0 < self.engine.n_ctx < needed:
            raise ValueError(
                f"context size {self.engine.n_ctx} cannot hold the largest test "
                f"(depth + prompt + generation = {needed})"
            )
        return self

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> Workload:
        """A workload from stable field names; a name that is no field is refused."""
        unknown = sorted(set(values) - set(FIELD_SECTIONS))
        if unknown:
            raise ValueError(f"unknown workload settings: {', '.join(unknown)}")
        nested: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
        for name, value in values.items():
            nested[FIELD_SECTIONS[name]][name] = value
        return cls.model_validate(nested)

    def flat(self) -> dict[str, Any]:
        return {
            name: getattr(getattr(self, section), name) for name, section in FIELD_SECTIONS.items()
        }

    def replace(self, **changes: Any) -> Workload:
        """A copy with some fields (by stable name) changed, checked again."""
        return Workload.from_flat({**self.flat(), **changes})

    def context_size(self) -> int:
        needed = self.tests.largest()
        return self.engine.n_ctx or ((needed + 255) // 256) * 256


@dataclass(frozen=True)
class Test:
    """One workload point: decode n_gen tokens after a prompt of n_prompt tokens, with
    n_depth tokens already in the context."""

    __test__: ClassVar[bool] = False

    n_prompt: int
    n_gen: int
    n_depth: int = 0

    def label(self) -> str:
        depth = f" @ d{self.n_depth}" if self.n_depth else ""
        return f"pp{self.n_prompt}+tg{self.n_gen}{depth}"


class RunSpec(BaseModel):
    """What one agent measures: an engine, the variant to make, and a workload. A run of
    a job holds one test; `edgebench bench` holds the whole matrix."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str = Field(default="llama_cpp", description="Inference engine.")
    variant: str = Field(
        default="", max_length=32, description="Variant to make, e.g. Q4_K_M, int8, bf16; "
        "'' = the model as it is."
    )  # fmt: skip
    workload: Workload = Field(default_factory=Workload)

    @classmethod
    def of(cls, backend: str = "llama_cpp", variant: str = "", **settings: Any) -> RunSpec:
        """A run spec from stable field names (tests and scripts)."""
        return cls(backend=backend, variant=variant, workload=Workload.from_flat(settings))

    def changed(self, **changes: Any) -> RunSpec:
        """A copy with the backend, the variant or workload fields (stable names) changed."""
        backend = changes.pop("backend", self.backend)
        variant = changes.pop("variant", self.variant)
        return RunSpec(backend=backend, variant=variant, workload=self.workload.replace(**changes))
