"""The measurement loop: prepare, load, warm up, repeat, summarize. It drives every
backend the same way and knows nothing about a particular engine or the coordinator."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgebench import __version__
from edgebench.agent import hardware
from edgebench.agent.backends import create_backend
from edgebench.agent.backends.base import Backend, BackendError, check_variant
from edgebench.agent.interference import InterferenceMeter
from edgebench.agent.memory import gpu_memory_mb, peak_rss_mb, reset_peak_rss
from edgebench.agent.sampler import Sampler
from edgebench.agent.sensors import (
    Roots,
    bitmask_sources,
    detect_sources,
    measures_power,
    power_state,
)
from edgebench.agent.sensors.nvml import nvml_module
from edgebench.agent.workload import CORPUS_VERSION, prompt_tokens
from edgebench.measure.energy import PhaseWindows, Window, sensor_summary
from edgebench.measure.record import BenchResult, RepTiming, summarize
from edgebench.measure.stats import relative_ci95
from edgebench.measure.sustained import stability, window_throughputs
from edgebench.modelfiles import tree_sha256, tree_size
from edgebench.workload import EngineSettings, Repetitions, RunSpec, SensorPolicy, Test

# phase, repetitions done, repetitions planned
Progress = Callable[[str, int, int], None]


def _quiet(phase: str, done: int, total: int) -> None:
    return None


@dataclass
class _Loaded:
    backend: Backend
    source_sha256: str
    model_sha256: str
    model_size_mb: float
    load_ms: float
    environment: dict[str, Any]
    sampler: Sampler


@dataclass(frozen=True)
class _Run:
    """A run spec with where its sensors are read (a fixture tree in tests)."""

    spec: RunSpec
    roots: Roots

    @property
    def repetitions(self) -> Repetitions:
        return self.spec.workload.repetitions

    @property
    def sensors(self) -> SensorPolicy:
        return self.spec.workload.sensors

    @property
    def engine(self) -> EngineSettings:
        return self.spec.workload.engine


def run_benchmark(
    source: Path,
    spec: RunSpec,
    *,
    cache_dir: Path,
    source_sha256: str | None = None,
    progress: Progress | None = None,
    roots: Roots | None = None,
) -> list[BenchResult]:
    """Measures every test of `spec` on one loaded model; one result per test."""
    report = progress or _quiet
    run = _Run(spec, roots or Roots())
    backend = create_backend(spec.backend)
    check_variant(backend.name, spec.variant)
    sampler = Sampler(detect_sources(run.roots), hz=spec.workload.sensors.sample_hz)
    try:
        loaded = _prepare_and_load(backend, source, run, cache_dir, source_sha256, report, sampler)
        sampler.start()
        results = []
        for test in spec.workload.tests.tests():
            results.append(_run_test(loaded, test, run, report))
        return [replace(r, source_sha256=loaded.source_sha256) for r in results]
    finally:
        sampler.stop()
        backend.close()


def _run_test(loaded: _Loaded, test: Test, run: _Run, report: Progress) -> BenchResult:
    sampler = loaded.sampler
    cooldown = _cool_down(sampler, run, report) if run.sensors.cooldown_c is not None else None
    idle = _idle_baseline(sampler, run, report)
    measure = _sustained if run.repetitions.sustained_seconds else _measure
    sampler.sample_now()  # boundaries: every source read just before and just after
    result = measure(loaded, test, run, report)
    sampler.sample_now()
    return _with_sensors(result, sampler, idle, cooldown)


def _idle_baseline(sampler: Sampler, run: _Run, report: Progress) -> Window | None:
    """Power at rest just before the run, to subtract from the run's energy."""
    if not run.sensors.idle_seconds or not measures_power(sampler.sources):
        return None
    report("idle baseline", 0, run.repetitions.reps)
    sampler.sample_now()
    start = time.perf_counter_ns()
    time.sleep(run.sensors.idle_seconds)
    sampler.sample_now()
    return Window(start, time.perf_counter_ns())


def _hottest(sampler: Sampler) -> float | None:
    sampler.sample_now()
    latest = sampler.snapshot()
    newest = latest[-1].t_ns if latest else 0
    temps = [s.reading.value for s in latest
             if s.reading.kind == "temperature" and s.t_ns >= newest - 50_000_000]  # fmt: skip
    return max((t for t in temps if t is not None), default=None)


def _cool_down(sampler: Sampler, run: _Run, report: Progress) -> dict[str, Any]:
    """Waits (up to the cap) until the hottest sensor is below the target temperature."""
    assert run.sensors.cooldown_c is not None
    started = time.monotonic()
    first = current = _hottest(sampler)
    while current is not None and current >= run.sensors.cooldown_c:
        if time.monotonic() - started >= run.sensors.cooldown_max_seconds:
            break
        report("cooling down", 0, run.repetitions.reps)
        time.sleep(1.0)
        current = _hottest(sampler)
    return {"target_c": run.sensors.cooldown_c, "start_c": first, "reached_c": current,
            "waited_s": round(time.monotonic() - started, 3),
            "reached": current is not None and current < run.sensors.cooldown_c}  # fmt: skip


MAX_STORED_SAMPLES = 20_000


def _with_sensors(
    result: BenchResult, sampler: Sampler, idle: Window | None, cooldown: dict[str, Any] | None
) -> BenchResult:
    reps = result.rep_timings
    phases = PhaseWindows(
        prefill=[Window(r.start_ns, r.start_ns + r.prefill_ns) for r in reps],
        decode=[Window(r.start_ns + r.token_ns[0], r.start_ns + r.token_ns[-1]) for r in reps],
        prefill_tokens=result.n_prompt * result.reps,
        decode_tokens=(result.n_gen - 1) * result.reps,
    )
    samples = sampler.snapshot()
    summary = sensor_summary(samples, phases, idle, bitmask_sources(sampler.sources))
    origin = idle.start_ns if idle else phases.span.start_ns
    kept = [s for s in samples if s.t_ns >= origin - 1_000_000_000]
    stride = max(1, len(kept) // MAX_STORED_SAMPLES + (len(kept) % MAX_STORED_SAMPLES > 0))
    summary["samples"] = [
        [round((s.t_ns - phases.span.start_ns) / 1e9, 4), s.reading.source, s.reading.name,
         s.reading.kind, s.reading.value]
        for s in kept[::stride]
    ]  # fmt: skip
    summary["samples_origin"] = "s from the start of the first measured repetition"
    summary["cooldown"] = cooldown
    summary["sources"] = list(dict.fromkeys(s.name for s in sampler.sources))
    summary["sample_hz"] = sampler.hz
    summary["source_interval_s"] = {s.name: s.interval_s for s in sampler.sources}
    return replace(
        result,
        avg_power_w=summary["avg_power_w"],
        prefill_j_per_token=summary["prefill_j_per_token"],
        decode_j_per_token=summary["decode_j_per_token"],
        temp_max_c=summary["temp_max_c"],
        throttled=summary["throttled"],
        sensors=summary,
    )


def _prepare_and_load(
    backend: Backend,
    source: Path,
    run: _Run,
    cache_dir: Path,
    source_sha256: str | None,
    report: Progress,
    sampler: Sampler,
) -> _Loaded:
    if not source.exists():
        raise BackendError(f"model not found: {source}")
    report("preparing", 0, run.repetitions.reps)
    sha = source_sha256 or tree_sha256(source)
    model = backend.prepare(source, sha, run.spec.variant, cache_dir)
    model_sha = sha if model == source else tree_sha256(model)
    reset_peak_rss()
    report("loading", 0, run.repetitions.reps)
    started = time.perf_counter_ns()
    backend.load(model, run.engine.model_copy(update={"n_ctx": run.spec.workload.context_size()}))
    load_ms = (time.perf_counter_ns() - started) / 1e6
    environment = environment_snapshot(backend, model_sha, run)
    environment["sensor_sources"] = list(dict.fromkeys(s.name for s in sampler.sources))
    environment["power_state"] = power_state(run.roots)
    size_mb = tree_size(model) / 2**20
    return _Loaded(backend, sha, model_sha, size_mb, load_ms, environment, sampler)


def environment_snapshot(backend: Backend, model_sha: str, run: _Run) -> dict[str, Any]:
    """Provenance: what ran, where, on what, with which build and settings."""
    return {
        "hardware": hardware.snapshot().flat(),
        "engine": backend.name,
        "engine_version": backend.engine_version(),
        "engine_build": backend.build_info(),
        "threads": backend.threads(),
        "variant": backend.variant(),
        "model_sha256": model_sha,
        # What was asked, then what the engine says it does where the two can differ
        # (flash attention `auto`, GPU layers by default, the context it holds).
        "settings": {
            **run.engine.model_dump(mode="json"),
            "n_ctx": backend.context_limit(),
            "in_force": {"n_ctx": backend.context_limit(), **backend.settings_in_force()},
        },
        "edgebench_version": __version__,
        "corpus_version": CORPUS_VERSION,
        # the measuring process's niceness, and its parent's (the agent's control process)
        "nice": {
            "run": os.getpriority(os.PRIO_PROCESS, 0),
            "control": os.getpriority(os.PRIO_PROCESS, os.getppid()),
        },
        "sensor_sources": [],
    }


def _workload(backend: Backend, test: Test) -> tuple[list[int], list[int]]:
    tokens = prompt_tokens(backend.tokenize, test.n_depth + test.n_prompt)
    return tokens[: test.n_depth], tokens[test.n_depth :]


def _gpu_memory(loaded: _Loaded, run: _Run) -> float | None:
    offloaded = loaded.environment["settings"]["in_force"].get("n_gpu_layers", 0)
    if not offloaded and run.engine.provider == "cpu":
        return None
    return gpu_memory_mb(nvml_module(run.roots))


def _max_ghz(environment: dict[str, Any]) -> float | None:
    mhz = float(environment["hardware"].get("cpu_max_mhz") or 0.0)
    return mhz / 1000.0 if mhz > 0 else None


def _summarize(
    loaded: _Loaded, test: Test, reps: list[RepTiming], meter: InterferenceMeter, run: _Run
) -> BenchResult:
    backend = loaded.backend
    result = summarize(
        reps,
        backend=backend.name,
        variant=backend.variant(),
        model_sha256=loaded.model_sha256,
        threads=backend.threads(),
        n_prompt=test.n_prompt,
        n_depth=test.n_depth,
        load_ms=loaded.load_ms,
        peak_rss_mb=peak_rss_mb(),
        engine_version=backend.engine_version(),
        model_size_mb=loaded.model_size_mb,
        max_ghz=_max_ghz(loaded.environment),
    )
    interference = meter.read()
    return replace(
        result,
        gpu_mem_mb=_gpu_memory(loaded, run),
        other_cpu_pct=interference.other_cpu_pct,
        noisy=interference.noisy(run.sensors.noisy_pct),
        reps_mode="auto" if run.repetitions.reps == 0 else "fixed",
        environment=loaded.environment,
    )


def _measure(loaded: _Loaded, test: Test, run: _Run, report: Progress) -> BenchResult:
    backend = loaded.backend
    context, prompt = _workload(backend, test)
    planned = run.repetitions.reps or run.repetitions.max_reps
    for _ in range(run.repetitions.warmup):
        report("warmup", 0, planned)
        backend.generate(context, prompt, test.n_gen)
    meter = InterferenceMeter().start()
    started = time.monotonic()
    reps: list[RepTiming] = []
    while True:
        report("measuring", len(reps), planned)
        reps.append(backend.generate(context, prompt, test.n_gen))
        if run.repetitions.reps and len(reps) >= run.repetitions.reps:
            break
        if not run.repetitions.reps and _auto_done(
            reps, run.repetitions, time.monotonic() - started
        ):
            break
    report("measuring", len(reps), len(reps))
    return _summarize(loaded, test, reps, meter, run)


def _auto_done(reps: list[RepTiming], policy: Repetitions, elapsed_s: float) -> bool:
    """--reps auto: stop once the decode ci95 is within target, or at the caps."""
    if len(reps) >= policy.max_reps or elapsed_s >= policy.max_seconds:
        return True
    if len(reps) < policy.min_reps:
        return False
    return relative_ci95([r.decode_tps() for r in reps]) <= policy.target_ci


def _sustained(loaded: _Loaded, test: Test, run: _Run, report: Progress) -> BenchResult:
    """Generates back to back for the set duration; the windows form the throughput curve."""
    backend = loaded.backend
    context, prompt = _workload(backend, test)
    meter = InterferenceMeter().start()
    duration_ns = int(run.repetitions.sustained_seconds * 1e9)
    start = time.perf_counter_ns()
    reps: list[RepTiming] = []
    while time.perf_counter_ns() - start < duration_ns:
        elapsed = (time.perf_counter_ns() - start) / 1e9
        report("sustained", int(elapsed), int(run.repetitions.sustained_seconds))
        reps.append(backend.generate(context, prompt, test.n_gen))
    stamps = [r.start_ns + t for r in reps for t in r.token_ns]
    windows = window_throughputs(stamps, start, int(run.repetitions.window_seconds * 1e9))
    result = _summarize(loaded, test, reps, meter, run)
    return replace(
        result,
        reps_mode="sustained",
        window_s=run.repetitions.window_seconds,
        windows_tps=windows,
        stability=stability(windows) if windows else None,
    )
