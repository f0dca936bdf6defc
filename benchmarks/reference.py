"""Our llama.cpp loop against llama.cpp's own llama-bench, side by side in one run.

Builds llama-bench from the sources vendored in the installed llama-cpp-python's source
distribution (benchmarks/build_llama_bench.sh), generates a random-weight llama model of
about 30M parameters in F32 and makes its Q4_K_M variant with llama.cpp's quantizer. Then,
per row, one run of ours and one llama-bench process take turns repetition by repetition
on the same file, threads and lengths (benchmarks/turns.py, with turns_shim.c preloaded
into llama-bench): both meet the same machine, and each of our repetitions is divided by
the geometric mean of llama-bench's two around it, a second or two apart, so drift of the
machine's speed cancels. Half of the repetitions run with llama-bench going first, half
with ours, as the side that goes second was measured 0-2% ahead (`--self-check`). The
table prints the median of those paired ratios with its distribution-free 95% interval
and a verdict against the target: met (the whole interval at or above it), missed (the
whole interval below) or undecided (the machine's noise is wider than the question: take
more repetitions). Targets: decode >= 0.97, prefill >= 0.95.

Rows: prefill (llama-bench's pp), decode right after the prompt as `edgebench bench`
reports it (tg at depth + prompt), "decode in tg's sequence" (our loop run the way tg
runs: the depth and prompt restored as a cached context, one token fed, then decode
steps that each follow a decode), "decode after the prompt, against pg's" (our decode
against llama-bench's own decode steps after the prompt inside its pg test, which it
does not report: the shim notes when each llama_synchronize returns), and the whole
request (prompt then generation, timed as one: pg). tg never decodes right after a
prefill; on a machine whose cache holds the model that alone costs the decode after a
prompt several % (RESULTS.md), so the last three rows compare the same work.

`--self-check` runs llama-bench's tg against itself the same way and prints the second
side over the first: the edge of going second, which running both orders cancels.

`--rounds N` instead alternates whole runs of the two tools N times (the method until
session 10): on this VM whole runs differ by several % whatever the tool, so its
intervals rarely decide. `--loop-only` keeps only the tg-sequence row.

Usage: .venv/bin/python -m benchmarks.reference [--turns 100 | --rounds 15] [--threads 2]
       [-p 64] [-n 64] [--variants F32,Q4_K_M] [--loop-only] [--large] [--self-check]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks.turns import Turns, paired_ratios, self_check
from edgebench.agent.reference import (
    _llama_bench_json,
    _steady_ts,
    llama_bench_decode,
    llama_bench_tests,
    request_tps,
    run_llama_bench,
)
from edgebench.agent.runner import run_benchmark
from edgebench.errors import EdgebenchError
from edgebench.measure.record import BenchResult, RepTiming
from edgebench.measure.stats import median_ci95
from edgebench.modelgen import TinyLlamaSpec, cached_tiny_llama
from edgebench.workload import RunSpec

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
# 512 wide, 8 layers, 8 heads, 1536 feed-forward: about 28M parameters.
MODEL = TinyLlamaSpec(n_embd=512, n_layer=8, n_head=8, n_head_kv=8, n_ff=1536)
# 1024 wide, 8 layers, 4096 feed-forward: about 135M parameters, 516 MiB in F32, larger
# than the 300 MiB last-level cache of the development VM (see RESULTS.md).
LARGE_MODEL = TinyLlamaSpec(n_embd=1024, n_layer=8, n_head=8, n_head_kv=8, n_ff=4096)


TG_SEQUENCE = "decode in tg's sequence"
# Each metric and its target: ours / llama-bench at least this much.
PG_DECODE = "decode after the prompt, against pg's"
_ROUND_METRICS = ("prefill", "decode", TG_SEQUENCE, "request")  # whole runs cannot time pg's decode
METRICS = (
    ("prefill", 0.95), ("decode", 0.97), (TG_SEQUENCE, 0.97), (PG_DECODE, 0.97),
    ("request", None),
)  # fmt: skip


def build_llama_bench() -> Path:
    done = subprocess.run([str(HERE / "build_llama_bench.sh")], capture_output=True, text=True,
                          check=True)  # fmt: skip
    return Path(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--turns", type=int, default=100, metavar="REPS",
        help="repetitions of each tool per row, taken in turns, half with each going first "
        "(at least 20; default 100)",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=int, default=0, metavar="N",
        help="alternate N whole runs of each tool instead of taking turns (at least 6)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-p", "--n-prompt", type=int, default=64)
    parser.add_argument("-n", "--n-gen", type=int, default=64)
    parser.add_argument(
        "--large", action="store_true", help="a ~135M-parameter model (516 MiB F32), not ~28M"
    )
    parser.add_argument("--variants", default="F32,Q4_K_M", help="comma-separated")
    parser.add_argument("--loop-only", action="store_true", help=f"only the row {TG_SEQUENCE!r}")
    parser.add_argument(
        "-r", "--reps", type=int, default=5, help="with --rounds: repetitions per run"
    )
    parser.add_argument(
        "--own-defaults", action="store_true",
        help="with --rounds: both tools at their own engine defaults, as a user runs them "
        "(prefill against pp, decode against tg)",
    )  # fmt: skip
    parser.add_argument(
        "--self-check", action="store_true",
        help="llama-bench's tg taking turns with itself: the second side over the first, "
        "the edge that running both orders cancels",
    )  # fmt: skip
    args = parser.parse_args()
    if args.own_defaults and not args.rounds:
        parser.error("--own-defaults alternates whole runs: give it --rounds N")
    if args.self_check and args.rounds:
        parser.error("--self-check takes turns: give it --turns, not --rounds")
    if args.rounds and args.rounds < 6:
        parser.error("--rounds must be at least 6 for a 95% interval of the median ratio")
    if not args.rounds and args.turns < 20:
        parser.error(
            "--turns needs at least 20 repetitions (half in each order; the first "
            "two of each have no pair)"
        )

    tool = build_llama_bench()
    source = cached_tiny_llama(DATA / "models", LARGE_MODEL if args.large else MODEL)
    print(
        f"llama-bench: {tool}\nmodel: {source.name} ({source.stat().st_size / 2**20:.0f} MiB F32)"
    )
    how = (
        f"{args.reps} reps, {args.rounds} alternating rounds"
        if args.rounds
        else f"{args.turns} repetitions taking turns"
    )
    print(f"threads {args.threads}, pp{args.n_prompt}+tg{args.n_gen}, {how}\n")
    print("| variant | metric | edgebench (median) | llama-bench (median) "
          "| paired ratio (median) | 95% interval | target |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    metrics: list[tuple[str, float | None]] = (
        [m for m in METRICS if m[0] == TG_SEQUENCE] if args.loop_only else list(METRICS)
    )
    for variant in args.variants.split(","):
        spec = RunSpec.of(
            variant=variant, n_prompt=(args.n_prompt,), n_gen=(args.n_gen,), reps=args.reps,
            threads=args.threads,
        )  # fmt: skip
        if args.self_check:
            _print_self_check(tool, source, spec, args.turns)
            continue
        if args.own_defaults:
            rows = _round_rows(*_alternate_defaults(tool, source, spec, args.rounds))
            metrics = [("prefill", None), ("decode", None)]
        elif args.rounds:
            alternate = _alternate_loops if args.loop_only else _alternate
            rows = _round_rows(*alternate(tool, source, spec, args.rounds))
        else:
            rows = _turn_rows(tool, source, spec, args.turns, [m for m, _ in metrics])
        for metric, target in metrics:
            if metric not in rows:  # PG_DECODE needs the shim: taking turns only
                continue
            mine, theirs, ratios = rows[metric]
            low, high = median_ci95(ratios)
            medians = f"{statistics.median(mine):.1f} | {statistics.median(theirs):.1f}"
            print(f"| {variant} | {metric} tok/s | {medians} | {statistics.median(ratios):.3f} "
                  f"| {low:.3f}-{high:.3f} | {_verdict(target, low, high)} |")  # fmt: skip
        sys.stdout.flush()


# Per metric: our figures, llama-bench's, and the paired ratios.
Rows = dict[str, tuple[list[float], list[float], list[float]]]


def _round_rows(ours: dict[str, list[float]], ref: dict[str, list[float]]) -> Rows:
    """One paired ratio per round: our run over llama-bench's run next to it."""
    return {
        metric: (mine, ref[metric], [o / r for o, r in zip(mine, ref[metric], strict=True)])
        for metric, mine in ours.items()
    }


@dataclass(frozen=True)
class _Pair:
    """What both tools run on, set up once per variant."""

    first: BenchResult  # our first run, which also made the variant
    model: Path  # the variant's file, for llama-bench
    repack: bool
    # tg's sequence through our loop: the depth and prompt restored as a cached context,
    # one token fed, then the same decode steps as tg, each right after another decode.
    tg_sequence: RunSpec


def _pair(source: Path, spec: RunSpec) -> _Pair:
    first = run_benchmark(source, spec, cache_dir=DATA / "variants")[0]
    return _Pair(
        first=first,
        model=_variant_path(first.source_sha256, spec.variant, source),
        repack=bool(first.environment["engine_build"]["repack"]),
        tg_sequence=spec.changed(n_depth=(first.n_depth + first.n_prompt,), n_prompt=(1,)),
    )


def _take_turns(rounds: int, ours: Callable[[], None], reference: Callable[[], None]) -> None:
    """Per round, one run of each back to back, which goes first alternating from round
    to round so neither always follows the other."""
    for round_number in range(rounds):
        for run in (ours, reference) if round_number % 2 == 0 else (reference, ours):
            run()


def _alternate(
    tool: Path, source: Path, spec: RunSpec, rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Every row: per round, our request and our loop in tg's sequence, and llama-bench's
    pp, tg and pg."""
    pair = _pair(source, spec)
    ours: dict[str, list[float]] = {metric: [] for metric in _ROUND_METRICS}
    ref: dict[str, list[float]] = {metric: [] for metric in _ROUND_METRICS}

    def run_ours() -> None:
        result = run_benchmark(source, spec, cache_dir=DATA / "variants")[0]
        ours["prefill"].append(result.prefill_tps)
        ours["decode"].append(result.decode_tps)
        ours["request"].append(request_tps(result))
        in_tg_sequence = run_benchmark(source, pair.tg_sequence, cache_dir=DATA / "variants")[0]
        ours[TG_SEQUENCE].append(in_tg_sequence.decode_tps)

    def run_reference() -> None:
        figures = run_llama_bench(tool, pair.model, pair.first, spec, pair.repack)
        ref["prefill"].append(figures.prefill_tps)
        ref["decode"].append(figures.decode_tps)
        ref[TG_SEQUENCE].append(figures.decode_tps)
        ref["request"].append(figures.request_tps)

    _take_turns(rounds, run_ours, run_reference)
    return ours, ref


def _alternate_defaults(
    tool: Path, source: Path, spec: RunSpec, rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Both tools as a user runs them, each at its own defaults: our runner given only the
    sizes, repetitions and threads (so n_batch 2048, n_ubatch 512, flash attention auto,
    GPU layers by build), llama-bench given only the model, threads, sizes and
    repetitions. Prefill against its pp, decode against its tg."""
    first = run_benchmark(source, spec, cache_dir=DATA / "variants")[0]
    model = _variant_path(first.source_sha256, spec.variant, source)
    reps = spec.workload.repetitions.reps
    common = ["-m", str(model), "-t", str(first.threads), "-r", str(reps + 1)]
    tests = {"prefill": ["-p", str(first.n_prompt), "-n", "0"],
             "decode": ["-p", "0", "-n", str(first.n_gen)]}  # fmt: skip
    ours: dict[str, list[float]] = {metric: [] for metric in tests}
    ref: dict[str, list[float]] = {metric: [] for metric in tests}

    def run_ours() -> None:
        result = run_benchmark(source, spec, cache_dir=DATA / "variants")[0]
        ours["prefill"].append(result.prefill_tps)
        ours["decode"].append(result.decode_tps)

    def run_reference() -> None:
        for metric, test in tests.items():
            ref[metric].append(_steady_ts(_llama_bench_json(tool, [*common, *test]), reps))

    _take_turns(rounds, run_ours, run_reference)
    return ours, ref


def _alternate_loops(
    tool: Path, source: Path, spec: RunSpec, rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """The row "decode in tg's sequence" alone: our loop in tg's sequence against tg."""
    pair = _pair(source, spec)
    ours: list[float] = []
    ref: list[float] = []

    def run_ours() -> None:
        result = run_benchmark(source, pair.tg_sequence, cache_dir=DATA / "variants")[0]
        ours.append(result.decode_tps)

    def run_reference() -> None:
        ref.append(llama_bench_decode(tool, pair.model, pair.first, spec, pair.repack))

    _take_turns(rounds, run_ours, run_reference)
    return {TG_SEQUENCE: ours}, {TG_SEQUENCE: ref}


# What each row runs: our spec (the tg sequence or the request), llama-bench's test, and
# the per-repetition figure of ours it is compared with.
@dataclass(frozen=True)
class _TurnRow:
    in_tg_sequence: bool  # our spec: the tg sequence, else the request
    test: str  # llama-bench's (agent/reference.llama_bench_tests)
    figure: Callable[[RepTiming, int], float]  # ours per repetition, given n_prompt
    decode_inside_pg: bool = False  # theirs: the decode steps of its pg, timed by the shim


_TURN_PLAN = {
    "prefill": _TurnRow(False, "prefill", lambda rep, n_prompt: rep.prefill_tps(n_prompt)),
    "decode": _TurnRow(False, "decode", lambda rep, _: rep.decode_tps()),
    TG_SEQUENCE: _TurnRow(True, "decode", lambda rep, _: rep.decode_tps()),
    PG_DECODE: _TurnRow(False, "request", lambda rep, _: rep.decode_tps(), True),
    "request": _TurnRow(False, "request", lambda rep, n_prompt: rep.request_tps(n_prompt)),
}


def _turn_rows(tool: Path, source: Path, spec: RunSpec, reps: int, metrics: list[str]) -> Rows:
    """Per row, runs of ours and llama-bench processes taking turns repetition by
    repetition (benchmarks/turns.py), half of the repetitions with llama-bench going
    first and half with ours (the second side has an edge: see Turns.start); each of our
    repetitions is divided by the geometric mean of llama-bench's two around it."""
    pair = _pair(source, spec)
    half = replace(pair.first, reps=reps // 2)
    tests = llama_bench_tests(pair.model, half, spec, pair.repack)
    rows: Rows = {}
    for metric in metrics:
        row = _TURN_PLAN[metric]
        ours_spec = (pair.tg_sequence if row.in_tg_sequence else spec).changed(reps=half.reps)
        mine, theirs, ratios = [], [], []
        for we_start in (False, True):
            result, turns, rates = _take_turns_once(
                tool, source, ours_spec, tests[row.test], we_start, row.decode_inside_pg
            )
            ours = [row.figure(rep, result.n_prompt) for rep in result.rep_timings]
            mine += ours
            theirs += rates[1:]
            ratios += paired_ratios(ours, turns.rep_turns, rates, we_started=we_start)
        rows[metric] = (mine, theirs, ratios)
    return rows


def _take_turns_once(
    tool: Path, source: Path, spec: RunSpec, args: list[str], we_start: bool, syncs: bool
) -> tuple[BenchResult, Turns, list[float]]:
    shim = tool.parent / "libedgebench-turns.so"
    turns = Turns.start(tool, args, shim, we_start=we_start, sync_log=syncs)
    try:
        result = run_benchmark(source, spec, cache_dir=DATA / "variants", progress=turns.gate)[0]
        rates = turns.finish()
    finally:
        turns.close()
    if syncs:
        rates = turns.decode_rates_after_prompt()
    if len(turns.rep_turns) < spec.workload.repetitions.reps // 2:
        raise EdgebenchError(
            f"llama-bench took turns for {len(turns.rep_turns)} of our "
            f"{spec.workload.repetitions.reps} repetitions:"
            f" is {shim} built (benchmarks/build_llama_bench.sh)?"
        )
    return result, turns, rates


def _print_self_check(tool: Path, source: Path, spec: RunSpec, reps: int) -> None:
    pair = _pair(source, spec)
    args = llama_bench_tests(pair.model, replace(pair.first, reps=reps), spec, pair.repack)
    ratios = self_check(tool, args["decode"], tool.parent / "libedgebench-turns.so")
    low, high = median_ci95(ratios)
    print(f"| {spec.variant} | llama-bench tg against itself, second / first | - | - "
          f"| {statistics.median(ratios):.3f} | {low:.3f}-{high:.3f} | - |")  # fmt: skip


def _verdict(target: float | None, low: float, high: float) -> str:
    if target is None:
        return "-"
    if low >= target:
        return f">= {target} met"
    if high < target:
        return f">= {target} MISSED"
    return f">= {target} undecided"


def _variant_path(source_sha: str, variant: str, source: Path) -> Path:
    if variant == "F32":
        return source
    return DATA / "variants" / f"{source_sha}-{variant.lower()}.gguf"


if __name__ == "__main__":
    main()
