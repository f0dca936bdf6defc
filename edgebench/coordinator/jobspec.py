"""A job request and its expansion into runs: models x backends x variants x depths x
prompt lengths x generation lengths. Everything is checked before anything is stored."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from edgebench.coordinator.tables import Job
from edgebench.dashboard.models import JobCreate
from edgebench.engines import ENGINES, EngineError, check_matrix
from edgebench.errors import EdgebenchError

MAX_RUNS_PER_JOB = 1000


class JobSpecError(EdgebenchError, ValueError):
    pass


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
