"""A job request and its expansion into runs: models x backends x variants x depths x
prompt lengths x generation lengths. Everything is checked before anything is stored."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgebench.coordinator.selectors import DeviceSelector
from edgebench.coordinator.tables import Job
from edgebench.engines import ENGINES, EngineError, check_matrix
from edgebench.errors import EdgebenchError
from edgebench.protocol import NAME_RE
from edgebench.workload import FIELD_SECTIONS, SECTIONS, Workload

MAX_RUNS_PER_JOB = 1000


class JobSpecError(EdgebenchError, ValueError):
    pass


class JobCreate(BaseModel):
    """A job: a matrix of models x backends x variants, each run with the workload (its
    own matrix of sizes, repetition and sensor policy, engine settings) on devices the
    selector allows."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(min_length=1, max_length=8)
    backends: list[str] = Field(default_factory=list, max_length=3)  # [] = by model format
    variants: list[str] = Field(default_factory=lambda: [""], min_length=1, max_length=16)
    workload: Workload = Field(default_factory=Workload)
    device: str | None = Field(default=None, pattern=NAME_RE.pattern)  # = selector.devices
    selector: DeviceSelector = Field(default_factory=DeviceSelector)
    # Higher first; within one priority, the submitter with the fewest runs in flight
    # goes next (fair share), then the oldest run.
    priority: int = Field(default=0, ge=-100, le=100)
    submitter: str = Field(default="default", pattern=NAME_RE.pattern)

    @model_validator(mode="before")
    @classmethod
    def _flat_workload(cls, data: Any) -> Any:
        """Workload settings by their stable flat names (edgebench 0.1's body) are taken
        for one release, and folded into `workload`."""
        if not isinstance(data, dict) or not set(data) & set(FIELD_SECTIONS):
            return data
        if "workload" in data:
            raise ValueError("give the workload settings in `workload` or flat, not both")
        workload: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
        rest = {}
        for name, value in data.items():
            if name in FIELD_SECTIONS:
                if name == "flash_attn" and isinstance(value, bool):
                    value = "on" if value else "off"
                workload[FIELD_SECTIONS[name]][name] = value
            else:
                rest[name] = value
        return {**rest, "workload": workload}

    @model_validator(mode="after")
    def _device_is_a_selector(self) -> JobCreate:
        if self.device and self.device not in self.selector.devices:
            self.selector.devices.append(self.device)
        return self

    @field_validator("models")
    @classmethod
    def _shas(cls, models: list[str]) -> list[str]:
        for sha in models:
            if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                raise ValueError(f"{sha!r} is not a sha256")
        return models


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
    try:
        backends = check_matrix(spec.backends, spec.variants, {formats[m] for m in spec.models})
    except EngineError as exc:
        raise JobSpecError(str(exc)) from None
    runs, tests = [], spec.workload.tests
    for backend in backends:
        engine = ENGINES[backend]
        models = [sha for sha in spec.models if formats[sha] == engine.model_format.value]
        variants = [v for v in spec.variants if not v or v in engine.variants] or [""]
        for sha, variant, depth, prompt, gen in itertools.product(
            models, variants, tests.n_depth, tests.n_prompt, tests.n_gen
        ):
            runs.append(PlannedRun(sha, backend, variant, depth, prompt, gen))
    if len(runs) > MAX_RUNS_PER_JOB:
        raise JobSpecError(f"the job expands to {len(runs)} runs; at most {MAX_RUNS_PER_JOB}")
    return runs
