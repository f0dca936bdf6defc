"""The measurement loop: load, warm up, repeat, summarize. It drives any backend the
same way and knows nothing about a particular engine or the coordinator."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgebench.agent.backends import create_backend
from edgebench.agent.backends.base import EngineSettings
from edgebench.agent.cache import file_sha256
from edgebench.agent.memory import peak_rss_mb, reset_peak_rss
from edgebench.agent.workload import prompt_tokens
from edgebench.measure.record import BenchResult, RepTiming, summarize


@dataclass(frozen=True)
class BenchSpec:
    backend: str = "llama_cpp"
    n_prompt: int = 64
    n_gen: int = 64
    reps: int = 5
    warmup: int = 1
    threads: int = 0
    n_ctx: int = 0
    variant: str = ""

    def validate(self) -> None:
        if self.n_prompt < 1:
            raise ValueError("prompt tokens must be at least 1")
        if self.n_gen < 2:
            raise ValueError("generated tokens must be at least 2 (decode speed needs two)")
        if self.reps < 1:
            raise ValueError("repetitions must be at least 1")
        if self.warmup < 0 or self.threads < 0 or self.n_ctx < 0:
            raise ValueError("warm-up, threads and context size cannot be negative")

    def context_size(self) -> int:
        needed = self.n_prompt + self.n_gen
        return self.n_ctx or ((needed + 255) // 256) * 256


# phase, repetitions done, repetitions in all
Progress = Callable[[str, int, int], None]


def run_benchmark(
    model_path: Path,
    spec: BenchSpec,
    *,
    model_sha256: str | None = None,
    progress: Progress | None = None,
) -> BenchResult:
    spec.validate()
    report = progress or (lambda phase, done, total: None)
    backend = create_backend(spec.backend)
    reset_peak_rss()
    report("loading", 0, spec.reps)
    started = time.perf_counter_ns()
    backend.load(model_path, EngineSettings(threads=spec.threads, n_ctx=spec.context_size()))
    load_ms = (time.perf_counter_ns() - started) / 1e6
    try:
        sha = model_sha256 or file_sha256(model_path)
        prompt = prompt_tokens(backend.tokenize, spec.n_prompt)
        for _ in range(spec.warmup):
            report("warmup", 0, spec.reps)
            backend.generate(prompt, spec.n_gen)
        reps: list[RepTiming] = []
        for done in range(spec.reps):
            report("measuring", done, spec.reps)
            reps.append(backend.generate(prompt, spec.n_gen))
        report("measuring", spec.reps, spec.reps)
        return summarize(
            reps,
            backend=backend.name,
            variant=spec.variant or backend.variant(),
            model_sha256=sha,
            threads=backend.threads(),
            n_prompt=spec.n_prompt,
            load_ms=load_ms,
            peak_rss_mb=peak_rss_mb(),
            engine_version=backend.engine_version(),
        )
    finally:
        backend.close()
