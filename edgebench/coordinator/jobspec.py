"""A job request and its expansion into runs: models x backends x variants x depths x
prompt lengths x generation lengths. Everything is checked before anything is stored."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from pydantic import BaseModel, Field, field_validator, model_validator

from edgebench.agent.backends import SOURCE_FORMATS, VARIANTS, backend_names
from edgebench.coordinator.selectors import DeviceSelector
from edgebench.coordinator.tables import Job
from edgebench.coordinator.wire import NAME_RE
from edgebench.errors import EdgebenchError

MAX_RUNS_PER_JOB = 1000


class JobSpecError(EdgebenchError, ValueError):
    pass


class JobCreate(BaseModel):
    models: list[str] = Field(min_length=1, max_length=8)
    backends: list[str] = Field(default_factory=list, max_length=3)  # [] = by model format
    variants: list[str] = Field(default_factory=lambda: [""], min_length=1, max_length=16)
    n_prompt: list[int] = Field(default_factory=lambda: [64], min_length=1, max_length=16)
    n_gen: list[int] = Field(default_factory=lambda: [64], min_length=1, max_length=16)
    n_depth: list[int] = Field(default_factory=lambda: [0], min_length=1, max_length=16)
    reps: int = Field(default=5, ge=0, le=1000)  # 0 = auto
    warmup: int = Field(default=1, ge=0, le=100)
    max_reps: int = Field(default=30, ge=2, le=1000)
    max_seconds: float = Field(default=300.0, gt=0, le=86400)
    threads: int = Field(default=0, ge=0, le=1024)
    sustained_seconds: float = Field(default=0.0, ge=0, le=86400)
    window_seconds: float = Field(default=5.0, gt=0, le=3600)
    n_ctx: int = Field(default=0, ge=0, le=1 << 20)  # 0 = sized from the largest test
    n_batch: int = Field(default=512, ge=1, le=65536)
    n_ubatch: int = Field(default=512, ge=1, le=65536)
    n_gpu_layers: int = Field(default=0, ge=-1, le=10000)
    flash_attn: bool = False
    provider: str = Field(default="cpu", pattern=r"^(cpu|cuda|tensorrt|dml)$")
    noisy_pct: float = Field(default=10.0, ge=0, le=100)
    idle_seconds: float = Field(default=2.0, ge=0, le=600)
    sample_hz: float = Field(default=10.0, gt=0, le=100)
    cooldown_c: float | None = Field(default=None, ge=0, le=150)
    cooldown_max_seconds: float = Field(default=300.0, ge=0, le=7200)
    device: str | None = Field(default=None, pattern=NAME_RE.pattern)  # = selector.devices
    selector: DeviceSelector = Field(default_factory=DeviceSelector)
    # Higher first; within one priority, the submitter with the fewest runs in flight
    # goes next (fair share), then the oldest run.
    priority: int = Field(default=0, ge=-100, le=100)
    submitter: str = Field(default="default", pattern=NAME_RE.pattern)

    @model_validator(mode="after")
    def _device_is_a_selector(self) -> JobCreate:
        if self.device and self.device not in self.selector.devices:
            self.selector.devices.append(self.device)
        return self

    @model_validator(mode="after")
    def _context_holds_every_test(self) -> JobCreate:
        needed = max(self.n_depth) + max(self.n_prompt) + max(self.n_gen)
        if 0 < self.n_ctx < needed:
            raise ValueError(
                f"n_ctx {self.n_ctx} cannot hold the largest test "
                f"(depth + prompt + generation = {needed})"
            )
        return self

    @field_validator("models")
    @classmethod
    def _shas(cls, models: list[str]) -> list[str]:
        for sha in models:
            if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                raise ValueError(f"{sha!r} is not a sha256")
        return models

    @field_validator("n_prompt", "n_gen", "n_depth")
    @classmethod
    def _sizes(cls, values: list[int], info: object) -> list[int]:
        name = getattr(info, "field_name", "")
        low = {"n_prompt": 1, "n_gen": 2, "n_depth": 0}[name]
        if any(not low <= v <= 131072 for v in values):
            raise ValueError(f"every value must be between {low} and 131072")
        return values


def new_job(spec: JobCreate) -> Job:
    """The job row for an accepted request (its runs come from plan_runs)."""
    return Job(spec_json=spec.model_dump_json(), priority=spec.priority, submitter=spec.submitter)


@dataclass(frozen=True)
class PlannedRun:
    model_sha256: str
    backend: str
    variant: str
    n_depth: int
    n_prompt: int
    n_gen: int


def plan_runs(spec: JobCreate, formats: dict[str, str]) -> list[PlannedRun]:
    """The runs of a job, given each model's artifact format; a clear error for a backend
    that cannot run any given model, a variant no chosen backend can make, or a model no
    chosen backend can run."""
    given = {formats[sha] for sha in spec.models}
    backends = spec.backends or sorted(b for b, fmt in SOURCE_FORMATS.items() if fmt in given)
    for backend in backends:
        if backend not in backend_names():
            raise JobSpecError(f"unknown backend {backend!r}; known: {', '.join(backend_names())}")
    for variant in spec.variants:
        if variant and not any(variant in VARIANTS[b] for b in backends):
            raise JobSpecError(
                f"variant {variant!r} cannot be made by {', '.join(backends)}; "
                + "; ".join(f"{b}: {', '.join(VARIANTS[b])}" for b in backends)
            )
    runs = []
    for backend in backends:
        models = [sha for sha in spec.models if formats[sha] == SOURCE_FORMATS[backend]]
        if not models:
            raise JobSpecError(f"backend {backend} needs a {SOURCE_FORMATS[backend]} model")
        variants = [v for v in spec.variants if not v or v in VARIANTS[backend]] or [""]
        for sha, variant, depth, prompt, gen in itertools.product(
            models, variants, spec.n_depth, spec.n_prompt, spec.n_gen
        ):
            runs.append(PlannedRun(sha, backend, variant, depth, prompt, gen))
    unused = [sha for sha in spec.models if not any(r.model_sha256 == sha for r in runs)]
    if unused:
        raise JobSpecError(f"no chosen backend can run model {unused[0]} ({formats[unused[0]]})")
    if len(runs) > MAX_RUNS_PER_JOB:
        raise JobSpecError(f"the job expands to {len(runs)} runs; at most {MAX_RUNS_PER_JOB}")
    return runs
