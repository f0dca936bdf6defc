"""The benchmark result record: stable field names and how they are computed from
per-token timestamps. Every exporter, the wire format and the store use these names."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

from edgebench.measure.stats import ci95_half_width, mean, percentile, stdev

# Bumped whenever the boundary of a metric changes, so stored results stay comparable.
DEFINITIONS_VERSION = "6"

# (name, unit, meaning) in export order. The names are a public contract.
RESULT_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("backend", "", "inference engine"),
    ("variant", "", "model variant (quantization) that ran"),
    ("model_sha256", "", "sha256 of the model file (or folder) that ran"),
    ("model_size_mb", "MiB", "size on disk of the model variant that ran"),
    ("threads", "", "CPU threads given to the engine"),
    ("n_depth", "tokens", "context already in the KV cache before the prompt (untimed)"),
    ("n_prompt", "tokens", "prompt length"),
    ("n_gen", "tokens", "generated tokens per repetition (EOS ignored)"),
    ("reps", "", "measured repetitions (warm-up excluded)"),
    ("load_ms", "ms", "model load time"),
    ("ttft_ms", "ms", "time to first token, mean over reps (prefill + first sample)"),
    ("ttft_ms_std", "ms", "standard deviation of ttft_ms"),
    ("prefill_tps", "tokens/s", "prompt tokens per second of the prefill, mean over reps"),
    ("prefill_tps_std", "tokens/s", "standard deviation of prefill_tps"),
    ("prefill_tps_ci95", "tokens/s", "half width of the 95% confidence interval"),
    ("decode_tps", "tokens/s", "generated tokens per second after the first, mean over reps"),
    ("decode_tps_std", "tokens/s", "standard deviation of decode_tps"),
    ("decode_tps_ci95", "tokens/s", "half width of the 95% confidence interval"),
    ("decode_tps_per_core", "tokens/s", "decode_tps / threads"),
    ("decode_tps_per_ghz_core", "tokens/s", "decode_tps / (threads x max GHz); null if unknown"),
    ("itl_p50_ms", "ms", "median inter-token gap over all gaps of all reps"),
    ("itl_p90_ms", "ms", "90th percentile inter-token gap"),
    ("itl_p95_ms", "ms", "95th percentile inter-token gap"),
    ("itl_p99_ms", "ms", "99th percentile inter-token gap"),
    ("itl_max_ms", "ms", "largest inter-token gap"),
    ("e2e_ms", "ms", "prefill start to last token, mean over reps"),
    ("e2e_ms_std", "ms", "standard deviation of e2e_ms"),
    ("peak_rss_mb", "MiB", "peak resident memory of the process during load and run"),
    ("gpu_mem_mb", "MiB", "NVIDIA GPU memory the process held after the run; null on CPU runs"),
    ("other_cpu_pct", "%", "machine CPU used by other processes during the reps"),
    ("noisy", "", "true when other_cpu_pct was above the run's threshold by more than a tick"),
    ("stability", "", "sustained mode: slowest / fastest window throughput; null otherwise"),
    ("avg_power_w", "W", "mean power of the energy scope over the measured reps (gross)"),
    ("prefill_j_per_token", "J/token", "prefill energy minus idle baseline, per prompt token"),
    ("decode_j_per_token", "J/token", "decode energy minus idle baseline, per generated token"),
    ("temp_max_c", "C", "hottest sensor reading during the run"),
    ("throttled", "", "a throttle flag turned on or a throttle counter went up during the run"),
)
FIELD_NAMES: tuple[str, ...] = tuple(name for name, _, _ in RESULT_FIELDS)
BOOLEAN_FIELDS: frozenset[str] = frozenset({"noisy", "throttled"})
NUMERIC_FIELDS: frozenset[str] = (
    frozenset(FIELD_NAMES) - {"backend", "variant", "model_sha256"} - BOOLEAN_FIELDS
)
# null = unknown (no sensor, too short to tell...), never zero
NULLABLE_FIELDS: frozenset[str] = frozenset(
    {
        "decode_tps_per_ghz_core",
        "gpu_mem_mb",
        "stability",
        "other_cpu_pct",
        "avg_power_w",
        "prefill_j_per_token",
        "decode_j_per_token",
        "temp_max_c",
        "throttled",
    }
)
# Fields that may be negative (temperatures below zero are real).
SIGNED_FIELDS: frozenset[str] = frozenset({"temp_max_c"})


@dataclass(frozen=True)
class RepTiming:
    """One measured repetition: how long the prefill call took and, for every generated
    token, nanoseconds from the start of the prefill to the moment it was sampled."""

    prefill_ns: int
    token_ns: tuple[int, ...]
    start_ns: int = 0  # perf_counter_ns at the start of the rep (sustained-mode windows)

    def gaps_ns(self) -> list[int]:
        return [b - a for a, b in pairwise(self.token_ns)]

    def prefill_tps(self, n_prompt: int) -> float:
        return n_prompt / (self.prefill_ns / 1e9)

    def decode_tps(self) -> float:
        """Tokens after the first over the time from the first to the last."""
        return (len(self.token_ns) - 1) / ((self.token_ns[-1] - self.token_ns[0]) / 1e9)

    def request_tps(self, n_prompt: int) -> float:
        """The prompt's tokens and those decoded after the first, over the time from the
        prompt's start to the last token (llama-bench's pg counts the same)."""
        return (n_prompt + len(self.token_ns) - 1) / (self.token_ns[-1] / 1e9)


@dataclass
class BenchResult:
    backend: str
    variant: str
    model_sha256: str
    model_size_mb: float
    threads: int
    n_depth: int
    n_prompt: int
    n_gen: int
    reps: int
    load_ms: float
    ttft_ms: float
    ttft_ms_std: float
    prefill_tps: float
    prefill_tps_std: float
    prefill_tps_ci95: float
    decode_tps: float
    decode_tps_std: float
    decode_tps_ci95: float
    decode_tps_per_core: float
    decode_tps_per_ghz_core: float | None
    itl_p50_ms: float
    itl_p90_ms: float
    itl_p95_ms: float
    itl_p99_ms: float
    itl_max_ms: float
    e2e_ms: float
    e2e_ms_std: float
    peak_rss_mb: float
    gpu_mem_mb: float | None = None
    other_cpu_pct: float | None = None
    noisy: bool = False
    stability: float | None = None
    avg_power_w: float | None = None
    prefill_j_per_token: float | None = None
    decode_j_per_token: float | None = None
    temp_max_c: float | None = None
    throttled: bool | None = None
    engine_version: str = ""
    definitions_version: str = DEFINITIONS_VERSION
    source_sha256: str = ""
    reps_mode: str = "fixed"  # or "auto": repeated until the decode ci95 was within target
    window_s: float | None = None  # sustained mode: window length
    windows_tps: list[float] = field(default_factory=list)  # sustained mode: the curve
    environment: dict[str, Any] = field(default_factory=dict)  # provenance snapshot
    sensors: dict[str, Any] = field(default_factory=dict)  # energy detail, events, samples
    rep_timings: list[RepTiming] = field(default_factory=list)

    def fields(self) -> dict[str, Any]:
        """The stable fields only, in export order."""
        return {name: getattr(self, name) for name in FIELD_NAMES}

    def to_dict(self) -> dict[str, Any]:
        """Everything, raw per-token timestamps included (json/jsonl exports)."""
        data = asdict(self)
        data["rep_timings"] = [
            {"start_ns": r.start_ns, "prefill_ns": r.prefill_ns, "token_ns": list(r.token_ns)}
            for r in self.rep_timings
        ]
        return data


def summarize(
    reps: list[RepTiming],
    *,
    backend: str,
    variant: str,
    model_sha256: str,
    threads: int,
    n_prompt: int,
    load_ms: float,
    peak_rss_mb: float,
    engine_version: str = "",
    n_depth: int = 0,
    model_size_mb: float = 0.0,
    max_ghz: float | None = None,
) -> BenchResult:
    """Turns raw repetitions into the result record; every rep must have the same
    number (at least two) of token timestamps."""
    if not reps:
        raise ValueError("no repetitions to summarize")
    n_gen = len(reps[0].token_ns)
    if n_gen < 2 or any(len(r.token_ns) != n_gen for r in reps):
        raise ValueError("every repetition must time the same number (>= 2) of tokens")
    ns_per_ms = 1e6
    ttft = [r.token_ns[0] / ns_per_ms for r in reps]
    prefill = [r.prefill_tps(n_prompt) for r in reps]
    decode = [r.decode_tps() for r in reps]
    e2e = [r.token_ns[-1] / ns_per_ms for r in reps]
    gaps = [g / ns_per_ms for r in reps for g in r.gaps_ns()]
    decode_mean = mean(decode)
    per_core = decode_mean / max(threads, 1)
    return BenchResult(
        backend=backend,
        variant=variant,
        model_sha256=model_sha256,
        model_size_mb=model_size_mb,
        threads=threads,
        n_depth=n_depth,
        n_prompt=n_prompt,
        n_gen=n_gen,
        reps=len(reps),
        load_ms=load_ms,
        ttft_ms=mean(ttft),
        ttft_ms_std=stdev(ttft),
        prefill_tps=mean(prefill),
        prefill_tps_std=stdev(prefill),
        prefill_tps_ci95=ci95_half_width(prefill),
        decode_tps=decode_mean,
        decode_tps_std=stdev(decode),
        decode_tps_ci95=ci95_half_width(decode),
        decode_tps_per_core=per_core,
        decode_tps_per_ghz_core=per_core / max_ghz if max_ghz else None,
        itl_p50_ms=percentile(gaps, 50),
        itl_p90_ms=percentile(gaps, 90),
        itl_p95_ms=percentile(gaps, 95),
        itl_p99_ms=percentile(gaps, 99),
        itl_max_ms=max(gaps),
        e2e_ms=mean(e2e),
        e2e_ms_std=stdev(e2e),
        peak_rss_mb=peak_rss_mb,
        engine_version=engine_version,
        rep_timings=list(reps),
    )


def implausibility(values: dict[str, Any]) -> str | None:
    """Why a result cannot be right (negative, infinite or impossible figures), or None."""
    if not isinstance(values.get("noisy"), bool):
        return "noisy must be true or false"
    if values.get("throttled") is not None and not isinstance(values["throttled"], bool):
        return "throttled must be true, false or null"
    for name in NUMERIC_FIELDS:
        value = values.get(name)
        if value is None and name in NULLABLE_FIELDS:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"{name} is missing or not a number"
        if not math.isfinite(value) or (value < 0 and name not in SIGNED_FIELDS):
            return f"{name} must be a finite, non-negative number (got {value})"
    if values["n_gen"] < 2 or values["reps"] < 1:
        return "a result needs at least 2 generated tokens and 1 repetition"
    if values["decode_tps"] <= 0 or values["ttft_ms"] <= 0:
        return "decode_tps and ttft_ms must be positive"
    if values["itl_p50_ms"] > values["itl_max_ms"]:
        return "itl_p50_ms is larger than itl_max_ms"
    if (values["other_cpu_pct"] or 0) > 100 or (values["stability"] or 0) > 1:
        return "other_cpu_pct above 100 or stability above 1"
    return None
