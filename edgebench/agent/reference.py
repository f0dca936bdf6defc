"""The reference check: llama.cpp's own llama-bench on the same file, threads and lengths.

llama-bench times prompt processing (pp) and text generation (tg) one token at a time
without sampling. Our prefill is compared with its pp at the same depth and prompt
length; our decode with its tg at depth n_depth + n_prompt; and our whole request (the
prompt, then the generated tokens) with its pg test, the same sequence timed as one.

Why pg as well: llama-bench's tg decodes right after restoring a cached context, so the
weights are still warm from the previous repetition's decoding, while our decode follows
the prompt's prefill, as a real request does. On a machine whose cache holds much of the
model that alone can make tg faster than any decode that follows a prompt (measured in
benchmarks/RESULTS.md). pg runs the same work as our loop does.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from edgebench import paths
from edgebench.agent.backends import create_backend
from edgebench.errors import EdgebenchError
from edgebench.measure.record import BenchResult
from edgebench.workload import RunSpec


@dataclass(frozen=True)
class ReferenceFigures:
    prefill_tps: float  # llama-bench pp
    decode_tps: float  # llama-bench tg
    request_tps: float  # llama-bench pg: prompt and generation tokens over their time


def request_tps(result: BenchResult) -> float:
    """Our figure comparable with llama-bench's pg: per rep, the prompt's tokens plus the
    tokens decoded after the first, over the time from the prompt's start to the last
    token; the mean over reps (llama-bench's figures are means of per-rep rates too)."""
    rates = [rep.request_tps(result.n_prompt) for rep in result.rep_timings]
    if not rates:
        raise EdgebenchError("the result carries no per-token timings to compare")
    return sum(rates) / len(rates)


def find_llama_bench(given: Path | None) -> Path:
    found = str(given) if given else shutil.which("llama-bench")
    if not found or not Path(found).is_file():
        raise EdgebenchError(
            "llama-bench not found: put it on PATH or pass --llama-bench PATH "
            "(benchmarks/build_llama_bench.sh builds the one matching our llama.cpp)"
        )
    return Path(found)


def _llama_bench_json(tool: Path, args: list[str]) -> list[dict[str, Any]]:
    done = subprocess.run([str(tool), *args, "-o", "json"], capture_output=True, text=True,
                          check=False, timeout=3600)  # fmt: skip
    return llama_bench_rows(done.returncode, done.stdout, done.stderr)


def llama_bench_rows(returncode: int, stdout: str, stderr: str) -> list[dict[str, Any]]:
    """The rows of a finished `llama-bench -o json`, or why there are none."""
    if returncode != 0:
        raise EdgebenchError(f"llama-bench failed: {stderr.strip()[-500:]}")
    try:
        rows: list[dict[str, Any]] = json.loads(stdout)
    except json.JSONDecodeError:
        raise EdgebenchError("llama-bench did not print JSON") from None
    return rows


def run_llama_bench(
    tool: Path, model: Path, result: BenchResult, spec: RunSpec, repack: bool
) -> ReferenceFigures:
    tests = llama_bench_tests(model, result, spec, repack)
    rates = {
        name: _steady_ts(_llama_bench_json(tool, args), result.reps) for name, args in tests.items()
    }
    return ReferenceFigures(rates["prefill"], rates["decode"], rates["request"])


def llama_bench_decode(
    tool: Path, model: Path, result: BenchResult, spec: RunSpec, repack: bool
) -> float:
    """llama-bench's tg: the decode steps of `result`, at its depth plus prompt."""
    args = llama_bench_tests(model, result, spec, repack)["decode"]
    return _steady_ts(_llama_bench_json(tool, args), result.reps)


def llama_bench_tests(
    model: Path, result: BenchResult, spec: RunSpec, repack: bool
) -> dict[str, list[str]]:
    """llama-bench's arguments for each figure it is compared on: pp for our prefill at the
    same depth, tg at depth + prompt for our decode steps, pg for our whole request. Each
    runs one repetition more than `result`, the first dropped (see _steady_ts)."""
    common = _common_args(model, result, spec, repack)
    depth, prompt, gen = str(result.n_depth), result.n_prompt, result.n_gen
    return {
        "prefill": [*common, "-p", str(prompt), "-n", "0", "-d", depth],
        "decode": [*common, "-p", "0", "-n", str(gen - 1), "-d", str(result.n_depth + prompt)],
        "request": [*common, "-p", "0", "-n", "0", "-pg", f"{prompt},{gen - 1}", "-d", depth],
    }


def llama_bench_samples(rows: list[dict[str, Any]]) -> list[float]:
    """Every repetition's rate from llama-bench's JSON, validated."""
    try:
        samples = [float(value) for value in rows[0]["samples_ts"]]
    except (IndexError, KeyError, TypeError, ValueError):
        raise EdgebenchError("llama-bench's JSON has no samples_ts figures") from None
    for value in samples:
        if not math.isfinite(value) or value <= 0:
            raise EdgebenchError(f"llama-bench reported a throughput of {value}")
    return samples


def _common_args(model: Path, result: BenchResult, spec: RunSpec, repack: bool) -> list[str]:
    settings = spec.workload.engine
    layers = -1 if settings.n_gpu_layers is None else settings.n_gpu_layers  # its default
    return [
        "-m", str(model), "-t", str(result.threads), "-r", str(result.reps + 1),
        "-b", str(settings.n_batch), "-ub", str(min(settings.n_ubatch, settings.n_batch)),
        "-ngl", str(layers), "-fa", settings.flash_attn.value,
        "--repack", "1" if repack else "0",
    ]  # fmt: skip


def _steady_ts(rows: list[dict[str, Any]], reps: int) -> float:
    """The mean rate of llama-bench's repetitions after its first. Its own warm-up is one
    token (tg) or one prompt (pp), and its first repetition is often far slower than the
    rest (measured: 0.44-0.89 of them); ours is a whole discarded repetition. Running it
    with one more repetition and dropping the first measures both after a full one."""
    samples = llama_bench_samples(rows)
    if len(samples) != reps + 1:
        raise EdgebenchError(f"llama-bench reported {len(samples)} repetitions, not {reps + 1}")
    steady = samples[1:]
    return sum(steady) / len(steady)


def compare_with_llama_bench(
    tool: Path, source: Path, spec: RunSpec, results: list[BenchResult], console: Console
) -> list[tuple[BenchResult, ReferenceFigures]]:
    if spec.backend != "llama_cpp":
        raise EdgebenchError("--reference compares the llama_cpp backend only")
    backend = create_backend("llama_cpp")
    pairs = []
    for result in results:
        model = backend.prepare(source, result.source_sha256, spec.variant,
                                paths.cache_dir() / "variants")  # fmt: skip
        repack = bool(result.environment.get("engine_build", {}).get("repack", True))
        pairs.append((result, run_llama_bench(tool, model, result, spec, repack)))
    table = Table(
        title=f"edgebench vs llama-bench ({tool})",
        caption="One run of each tool: on a busy machine whole runs differ by several %. "
        "benchmarks/reference.py in the source tree pairs them repetition by repetition.",
    )
    headers = ("Test", "Prefill tok/s", "llama-bench pp", "Ratio", "Decode tok/s",
               "llama-bench tg", "Ratio", "Request tok/s", "llama-bench pg", "Ratio")  # fmt: skip
    for header in headers:
        table.add_column(header, justify="right")
    for result, ref in pairs:
        ours = request_tps(result)
        table.add_row(
            f"pp{result.n_prompt}+tg{result.n_gen}@d{result.n_depth}",
            f"{result.prefill_tps:.1f}", f"{ref.prefill_tps:.1f}",
            f"{result.prefill_tps / ref.prefill_tps:.3f}",
            f"{result.decode_tps:.1f}", f"{ref.decode_tps:.1f}",
            f"{result.decode_tps / ref.decode_tps:.3f}",
            f"{ours:.1f}", f"{ref.request_tps:.1f}", f"{ours / ref.request_tps:.3f}",
        )  # fmt: skip
    console.print(table)
    return pairs
