"""The benchmark result record: stable field names and how they are computed from
per-token timestamps. Every exporter, the wire format and the store use these names."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

from edgebench.measure.stats import ci95_half_width, mean, percentile, stdev

# Bumped whenever the boundary of a metric changes, so stored results stay comparable.
DEFINITIONS_VERSION = "1"

# (name, unit, meaning) in export order. The names are a public contract.
RESULT_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("backend", "", "inference engine"),
    ("variant", "", "model variant (quantization) that ran"),
    ("model_sha256", "", "sha256 of the model file that ran"),
    ("threads", "", "CPU threads given to the engine"),
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
    ("itl_p50_ms", "ms", "median inter-token gap over all gaps of all reps"),
    ("itl_p90_ms", "ms", "90th percentile inter-token gap"),
    ("itl_p95_ms", "ms", "95th percentile inter-token gap"),
    ("itl_p99_ms", "ms", "99th percentile inter-token gap"),
    ("itl_max_ms", "ms", "largest inter-token gap"),
    ("e2e_ms", "ms", "prefill start to last token, mean over reps"),
    ("e2e_ms_std", "ms", "standard deviation of e2e_ms"),
    ("peak_rss_mb", "MiB", "peak resident memory of the process during load and run"),
)
FIELD_NAMES: tuple[str, ...] = tuple(name for name, _, _ in RESULT_FIELDS)
NUMERIC_FIELDS: frozenset[str] = frozenset(FIELD_NAMES) - {"backend", "variant", "model_sha256"}


@dataclass(frozen=True)
class RepTiming:
    """One measured repetition: how long the prefill call took and, for every generated
    token, nanoseconds from the start of the prefill to the moment it was sampled."""

    prefill_ns: int
    token_ns: tuple[int, ...]

    def gaps_ns(self) -> list[int]:
        return [b - a for a, b in pairwise(self.token_ns)]


@dataclass
class BenchResult:
    backend: str
    variant: str
    model_sha256: str
    threads: int
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
    itl_p50_ms: float
    itl_p90_ms: float
    itl_p95_ms: float
    itl_p99_ms: float
    itl_max_ms: float
    e2e_ms: float
    e2e_ms_std: float
    peak_rss_mb: float
    engine_version: str = ""
    definitions_version: str = DEFINITIONS_VERSION
    rep_timings: list[RepTiming] = field(default_factory=list)

    def fields(self) -> dict[str, Any]:
        """The stable fields only, in export order."""
        return {name: getattr(self, name) for name in FIELD_NAMES}

    def to_dict(self) -> dict[str, Any]:
        """Everything, raw per-token timestamps included (json/jsonl exports)."""
        data = asdict(self)
        data["rep_timings"] = [
            {"prefill_ns": r.prefill_ns, "token_ns": list(r.token_ns)} for r in self.rep_timings
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
    prefill = [n_prompt / (r.prefill_ns / 1e9) for r in reps]
    decode = [(n_gen - 1) / ((r.token_ns[-1] - r.token_ns[0]) / 1e9) for r in reps]
    e2e = [r.token_ns[-1] / ns_per_ms for r in reps]
    gaps = [g / ns_per_ms for r in reps for g in r.gaps_ns()]
    return BenchResult(
        backend=backend,
        variant=variant,
        model_sha256=model_sha256,
        threads=threads,
        n_prompt=n_prompt,
        n_gen=n_gen,
        reps=len(reps),
        load_ms=load_ms,
        ttft_ms=mean(ttft),
        ttft_ms_std=stdev(ttft),
        prefill_tps=mean(prefill),
        prefill_tps_std=stdev(prefill),
        prefill_tps_ci95=ci95_half_width(prefill),
        decode_tps=mean(decode),
        decode_tps_std=stdev(decode),
        decode_tps_ci95=ci95_half_width(decode),
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
    for name in NUMERIC_FIELDS:
        value = values.get(name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"{name} is missing or not a number"
        if not math.isfinite(value) or value < 0:
            return f"{name} must be a finite, non-negative number (got {value})"
    if values["n_gen"] < 2 or values["reps"] < 1:
        return "a result needs at least 2 generated tokens and 1 repetition"
    if values["decode_tps"] <= 0 or values["ttft_ms"] <= 0:
        return "decode_tps and ttft_ms must be positive"
    if values["itl_p50_ms"] > values["itl_max_ms"]:
        return "itl_p50_ms is larger than itl_max_ms"
    return None
