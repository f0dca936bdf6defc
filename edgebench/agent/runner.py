"""The measurement loop: prepare, load, warm up, repeat, summarize. It drives every
backend the same way and knows nothing about a particular engine or the coordinator."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgebench import __version__
from edgebench.agent import hardware
from edgebench.agent.backends import create_backend
from edgebench.agent.backends.base import Backend, BackendError, EngineSettings, check_variant
from edgebench.agent.interference import DEFAULT_NOISY_PCT, InterferenceMeter
from edgebench.agent.memory import gpu_memory_mb, peak_rss_mb, reset_peak_rss
from edgebench.agent.sampler import PhaseWindows, Sampler, Window, sensor_summary
from edgebench.agent.sensors import Roots, detect_sources, power_state
from edgebench.agent.sensors.nvml import nvml_module
from edgebench.agent.workload import CORPUS_VERSION, prompt_tokens
from edgebench.measure.record import BenchResult, RepTiming, summarize
from edgebench.measure.stats import relative_ci95
from edgebench.measure.sustained import stability, window_throughputs
from edgebench.modelfiles import tree_sha256, tree_size


@dataclass(frozen=True)
class Test:
    """One workload point: decode n_gen tokens after a prompt of n_prompt tokens, with
    n_depth tokens already in the context."""

    n_prompt: int
    n_gen: int
    n_depth: int = 0

    def label(self) -> str:
        depth = f" @ d{self.n_depth}" if self.n_depth else ""
        return f"pp{self.n_prompt}+tg{self.n_gen}{depth}"


@dataclass(frozen=True)
class BenchSpec:
    backend: str = "llama_cpp"
    variant: str = ""  # '' = the model as it is
    n_prompt: tuple[int, ...] = (64,)
    n_gen: tuple[int, ...] = (64,)
    n_depth: tuple[int, ...] = (0,)
    reps: int = 5  # 0 = auto: until the decode ci95 is within target_ci of the mean
    warmup: int = 1
    min_reps: int = 3
    max_reps: int = 30
    max_seconds: float = 300.0
    target_ci: float = 0.02
    sustained_seconds: float = 0.0  # > 0: generate back to back for this long
    window_seconds: float = 5.0
    noisy_pct: float = DEFAULT_NOISY_PCT
    settings: EngineSettings = field(default_factory=EngineSettings)
    sample_hz: float = 10.0
    idle_seconds: float = 2.0  # idle baseline before each test (only where power is measured)
    cooldown_c: float | None = None  # wait until the hottest sensor is below this first
    cooldown_max_seconds: float = 300.0
    roots: Roots | None = None  # where sensors are read; None: the real /sys, /proc, PATH

    def validate(self) -> None:
        if not self.n_prompt or min(self.n_prompt) < 1:
            raise ValueError("prompt tokens must be at least 1")
        if not self.n_gen or min(self.n_gen) < 2:
            raise ValueError("generated tokens must be at least 2 (decode speed needs two)")
        if not self.n_depth or min(self.n_depth) < 0:
            raise ValueError("prompt depth cannot be negative")
        if self.reps < 0 or self.warmup < 0 or self.settings.threads < 0:
            raise ValueError("repetitions, warm-up and threads cannot be negative")
        if self.reps == 0 and not 2 <= self.min_reps <= self.max_reps:
            raise ValueError("--reps auto needs 2 <= min reps <= max reps")
        if self.sustained_seconds < 0 or self.window_seconds <= 0:
            raise ValueError("sustained duration and window must be positive")
        if self.sustained_seconds and self.sustained_seconds < 2 * self.window_seconds:
            raise ValueError("a sustained run needs at least two windows")
        if self.sample_hz <= 0 or self.idle_seconds < 0 or self.cooldown_max_seconds < 0:
            raise ValueError("sampling rate, idle time and cool-down cap must be positive")
        needed = max(t.n_depth + t.n_prompt + t.n_gen for t in self.tests())
        if self.settings.n_ctx < 0 or 0 < self.settings.n_ctx < needed:
            raise ValueError(
                f"context size {self.settings.n_ctx} cannot hold the largest test "
                f"(depth + prompt + generation = {needed})"
            )

    def tests(self) -> list[Test]:
        return [
            Test(n_prompt=p, n_gen=g, n_depth=d)
            for d, p, g in itertools.product(self.n_depth, self.n_prompt, self.n_gen)
        ]

    def context_size(self) -> int:
        needed = max(t.n_depth + t.n_prompt + t.n_gen for t in self.tests())
        return self.settings.n_ctx or ((needed + 255) // 256) * 256


# Sources that measure power or energy: only with one of them is an idle baseline useful.
POWER_SOURCES = frozenset({"rapl", "nvml", "jetson", "tegrastats", "raspberrypi"})

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


def run_benchmark(
    source: Path,
    spec: BenchSpec,
    *,
    cache_dir: Path,
    source_sha256: str | None = None,
    progress: Progress | None = None,
) -> list[BenchResult]:
    """Measures every test of `spec` on one loaded model; one result per test."""
    spec.validate()
    report = progress or _quiet
    backend = create_backend(spec.backend)
    check_variant(backend.name, backend.variants, spec.variant)
    roots = spec.roots or Roots()
    sampler = Sampler(detect_sources(roots), hz=spec.sample_hz)
    try:
        loaded = _prepare_and_load(backend, source, spec, cache_dir, source_sha256, report, sampler)
        sampler.start()
        results = []
        for test in spec.tests():
            results.append(_run_test(loaded, test, spec, report))
        return [replace(r, source_sha256=loaded.source_sha256) for r in results]
    finally:
        sampler.stop()
        backend.close()


def _run_test(loaded: _Loaded, test: Test, spec: BenchSpec, report: Progress) -> BenchResult:
    sampler = loaded.sampler
    cooldown = _cool_down(sampler, spec, report) if spec.cooldown_c is not None else None
    idle = _idle_baseline(sampler, spec, report)
    measure = _sustained if spec.sustained_seconds else _measure
    sampler.sample_now()  # boundaries: every source read just before and just after
    result = measure(loaded, test, spec, report)
    sampler.sample_now()
    return _with_sensors(result, sampler, idle, cooldown)


def _measures_power(sampler: Sampler) -> bool:
    return any(s.name in POWER_SOURCES for s in sampler.sources)


def _idle_baseline(sampler: Sampler, spec: BenchSpec, report: Progress) -> Window | None:
    """Power at rest just before the run, to subtract from the run's energy."""
    if not spec.idle_seconds or not _measures_power(sampler):
        return None
    report("idle baseline", 0, spec.reps)
    sampler.sample_now()
    start = time.perf_counter_ns()
    time.sleep(spec.idle_seconds)
    sampler.sample_now()
    return Window(start, time.perf_counter_ns())


def _hottest(sampler: Sampler) -> float | None:
    sampler.sample_now()
    latest = sampler.snapshot()
    newest = latest[-1].t_ns if latest else 0
    temps = [s.reading.value for s in latest
             if s.reading.kind == "temperature" and s.t_ns >= newest - 50_000_000]  # fmt: skip
    return max((t for t in temps if t is not None), default=None)


def _cool_down(sampler: Sampler, spec: BenchSpec, report: Progress) -> dict[str, Any]:
    """Waits (up to the cap) until the hottest sensor is below the target temperature."""
    assert spec.cooldown_c is not None
    started = time.monotonic()
    first = current = _hottest(sampler)
    while current is not None and current >= spec.cooldown_c:
        if time.monotonic() - started >= spec.cooldown_max_seconds:
            break
        report("cooling down", 0, spec.reps)
        time.sleep(1.0)
        current = _hottest(sampler)
    return {"target_c": spec.cooldown_c, "start_c": first, "reached_c": current,
            "waited_s": round(time.monotonic() - started, 3),
            "reached": current is not None and current < spec.cooldown_c}  # fmt: skip


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
    summary = sensor_summary(samples, phases, idle)
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
    spec: BenchSpec,
    cache_dir: Path,
    source_sha256: str | None,
    report: Progress,
    sampler: Sampler,
) -> _Loaded:
    if not source.exists():
        raise BackendError(f"model not found: {source}")
    report("preparing", 0, spec.reps)
    sha = source_sha256 or tree_sha256(source)
    model = backend.prepare(source, sha, spec.variant, cache_dir)
    model_sha = sha if model == source else tree_sha256(model)
    reset_peak_rss()
    report("loading", 0, spec.reps)
    started = time.perf_counter_ns()
    backend.load(model, replace(spec.settings, n_ctx=spec.context_size()))
    load_ms = (time.perf_counter_ns() - started) / 1e6
    environment = environment_snapshot(backend, model_sha, spec)
    environment["sensor_sources"] = list(dict.fromkeys(s.name for s in sampler.sources))
    environment["power_state"] = power_state(spec.roots or Roots())
    size_mb = tree_size(model) / 2**20
    return _Loaded(backend, sha, model_sha, size_mb, load_ms, environment, sampler)


def environment_snapshot(backend: Backend, model_sha: str, spec: BenchSpec) -> dict[str, Any]:
    """Provenance: what ran, where, on what, with which build and settings."""
    return {
        "hardware": hardware.snapshot(),
        "engine": backend.name,
        "engine_version": backend.engine_version(),
        "engine_build": backend.build_info(),
        "threads": backend.threads(),
        "variant": backend.variant(),
        "model_sha256": model_sha,
        "settings": {
            "n_ctx": backend.context_limit(),  # what the engine holds, not only what was asked
            "n_batch": spec.settings.n_batch,
            "n_ubatch": spec.settings.n_ubatch,
            "n_gpu_layers": spec.settings.n_gpu_layers,
            "flash_attn": spec.settings.flash_attn,
            "provider": spec.settings.provider,
        },
        "edgebench_version": __version__,
        "corpus_version": CORPUS_VERSION,
        "sensor_sources": [],
    }


def _workload(backend: Backend, test: Test) -> tuple[list[int], list[int]]:
    tokens = prompt_tokens(backend.tokenize, test.n_depth + test.n_prompt)
    return tokens[: test.n_depth], tokens[test.n_depth :]


def _gpu_memory(spec: BenchSpec) -> float | None:
    settings = spec.settings
    if settings.n_gpu_layers == 0 and settings.provider == "cpu":
        return None
    return gpu_memory_mb(nvml_module(spec.roots or Roots()))


def _max_ghz(environment: dict[str, Any]) -> float | None:
    mhz = float(environment["hardware"].get("cpu_max_mhz") or 0.0)
    return mhz / 1000.0 if mhz > 0 else None


def _summarize(
    loaded: _Loaded, test: Test, reps: list[RepTiming], meter: InterferenceMeter, spec: BenchSpec
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
    other = meter.other_cpu_pct()
    return replace(
        result,
        gpu_mem_mb=_gpu_memory(spec),
        other_cpu_pct=other,
        noisy=other is not None and other > spec.noisy_pct,
        reps_mode="auto" if spec.reps == 0 else "fixed",
        environment=loaded.environment,
    )


def _measure(loaded: _Loaded, test: Test, spec: BenchSpec, report: Progress) -> BenchResult:
    backend = loaded.backend
    context, prompt = _workload(backend, test)
    planned = spec.reps or spec.max_reps
    for _ in range(spec.warmup):
        report("warmup", 0, planned)
        backend.generate(context, prompt, test.n_gen)
    meter = InterferenceMeter().start()
    started = time.monotonic()
    reps: list[RepTiming] = []
    while True:
        report("measuring", len(reps), planned)
        reps.append(backend.generate(context, prompt, test.n_gen))
        if spec.reps and len(reps) >= spec.reps:
            break
        if not spec.reps and _auto_done(reps, spec, time.monotonic() - started):
            break
    report("measuring", len(reps), len(reps))
    return _summarize(loaded, test, reps, meter, spec)


def _auto_done(reps: list[RepTiming], spec: BenchSpec, elapsed_s: float) -> bool:
    """--reps auto: stop once the decode ci95 is within target, or at the caps."""
    if len(reps) >= spec.max_reps or elapsed_s >= spec.max_seconds:
        return True
    if len(reps) < spec.min_reps:
        return False
    return relative_ci95([r.decode_tps() for r in reps]) <= spec.target_ci


def _sustained(loaded: _Loaded, test: Test, spec: BenchSpec, report: Progress) -> BenchResult:
    """Generates back to back for the set duration; the windows form the throughput curve."""
    backend = loaded.backend
    context, prompt = _workload(backend, test)
    meter = InterferenceMeter().start()
    duration_ns = int(spec.sustained_seconds * 1e9)
    start = time.perf_counter_ns()
    reps: list[RepTiming] = []
    while time.perf_counter_ns() - start < duration_ns:
        elapsed = (time.perf_counter_ns() - start) / 1e9
        report("sustained", int(elapsed), int(spec.sustained_seconds))
        reps.append(backend.generate(context, prompt, test.n_gen))
    stamps = [r.start_ns + t for r in reps for t in r.token_ns]
    windows = window_throughputs(stamps, start, int(spec.window_seconds * 1e9))
    result = _summarize(loaded, test, reps, meter, spec)
    return replace(
        result,
        reps_mode="sustained",
        window_s=spec.window_seconds,
        windows_tps=windows,
        stability=stability(windows) if windows else None,
    )
