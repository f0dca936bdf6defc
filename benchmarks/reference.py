"""Our llama.cpp loop against llama.cpp's own llama-bench, side by side in one run.

Builds llama-bench from the sources vendored in the installed llama-cpp-python's source
distribution (benchmarks/build_llama_bench.sh), generates a random-weight llama model of
about 30M parameters in F32, makes its Q4_K_M variant with llama.cpp's quantizer, then
alternates the two tools for several rounds on the same file, threads and lengths and
prints the ratio of the medians. Targets: decode >= 0.97, prefill >= 0.95. The request
row (prompt then generation, timed as one: llama-bench's pg) compares the same sequence
of work on both sides; see edgebench/agent/reference.py for why decode alone differs.

Usage: .venv/bin/python benchmarks/reference.py [--rounds 5] [--threads 2] [-p 64] [-n 64]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from edgebench.agent.backends.base import EngineSettings
from edgebench.agent.reference import request_tps, run_llama_bench
from edgebench.agent.runner import BenchSpec, run_benchmark
from edgebench.modelgen import TinyLlamaSpec, cached_tiny_llama

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
# 512 wide, 8 layers, 8 heads, 1536 feed-forward: about 28M parameters.
MODEL = TinyLlamaSpec(n_embd=512, n_layer=8, n_head=8, n_head_kv=8, n_ff=1536)


def build_llama_bench() -> Path:
    done = subprocess.run([str(HERE / "build_llama_bench.sh")], capture_output=True, text=True,
                          check=True)  # fmt: skip
    return Path(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-p", "--n-prompt", type=int, default=64)
    parser.add_argument("-n", "--n-gen", type=int, default=64)
    parser.add_argument("-r", "--reps", type=int, default=5)
    args = parser.parse_args()

    tool = build_llama_bench()
    source = cached_tiny_llama(DATA / "models", MODEL)
    print(
        f"llama-bench: {tool}\nmodel: {source.name} ({source.stat().st_size / 2**20:.0f} MiB F32)"
    )
    print(f"threads {args.threads}, pp{args.n_prompt}+tg{args.n_gen}, {args.reps} reps, "
          f"{args.rounds} alternating rounds\n")  # fmt: skip
    print("| variant | metric | edgebench (median) | llama-bench (median) | ratio | target |")
    print("|---|---|---|---|---|---|")
    for variant in ("F32", "Q4_K_M"):
        spec = BenchSpec(
            variant=variant, n_prompt=(args.n_prompt,), n_gen=(args.n_gen,), reps=args.reps,
            settings=EngineSettings(threads=args.threads),
        )  # fmt: skip
        ours_prefill, ours_decode, ours_request = [], [], []
        ref_prefill, ref_decode, ref_request = [], [], []
        for _ in range(args.rounds):
            result = run_benchmark(source, spec, cache_dir=DATA / "variants")[0]
            ours_prefill.append(result.prefill_tps)
            ours_decode.append(result.decode_tps)
            ours_request.append(request_tps(result))
            model = _variant_path(result.source_sha256, variant, source)
            repack = bool(result.environment["engine_build"]["repack"])
            reference = run_llama_bench(tool, model, result, spec, repack)
            ref_prefill.append(reference.prefill_tps)
            ref_decode.append(reference.decode_tps)
            ref_request.append(reference.request_tps)
        for metric, ours, ref, target in (
            ("prefill tok/s", ours_prefill, ref_prefill, 0.95),
            ("decode tok/s", ours_decode, ref_decode, 0.97),
            ("request tok/s", ours_request, ref_request, None),
        ):
            ratio = statistics.median(ours) / statistics.median(ref)
            medians = f"{statistics.median(ours):.1f} | {statistics.median(ref):.1f}"
            verdict = (
                "-" if target is None else f">= {target} " + ("ok" if ratio >= target else "BELOW")
            )
            print(f"| {variant} | {metric} | {medians} | {ratio:.4f} | {verdict} |")
        sys.stdout.flush()


def _variant_path(source_sha: str, variant: str, source: Path) -> Path:
    if variant == "F32":
        return source
    return DATA / "variants" / f"{source_sha}-{variant.lower()}.gguf"


if __name__ == "__main__":
    main()
