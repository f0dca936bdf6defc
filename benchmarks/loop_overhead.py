"""What our per-token loop costs, measured in one process.

Alternates, on one loaded model, the backend's own `generate` (decode, the engine's C
greedy sampler, one timestamp per token) with a loop shaped like llama-bench's text
generation test (decode a random token, synchronize, no logits read, no sampling, no
timestamps). Both decode at the same depth. Ratio = ours / llama-bench-like, median over
rounds; 1.0 means the loop adds nothing measurable.

Usage: .venv/bin/python -m benchmarks.loop_overhead [--rounds 12] [--threads 2] [--variant Q4_K_M]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import llama_cpp

from benchmarks.reference import MODEL
from edgebench.agent.backends.base import EngineSettings
from edgebench.agent.backends.llama_cpp import LlamaCppBackend
from edgebench.modelfiles import file_sha256
from edgebench.modelgen import cached_tiny_llama

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
N_PROMPT, N_GEN = 64, 64


def llama_bench_like(backend: LlamaCppBackend, prompt: list[int]) -> float:
    """Decode tok/s of a llama-bench style tg loop after the same prompt."""
    ctx = backend._loaded()
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    batch = backend._ensure_batch(len(prompt))
    backend._feed(ctx, batch, prompt, 0, logits_last=True)
    llama_cpp.llama_synchronize(ctx)
    backend._fill(batch, (0,), 0, logits_last=True)
    started = time.perf_counter_ns()
    for i in range(N_GEN - 1):
        batch.token[0] = random.randrange(256)
        batch.pos[0] = len(prompt) + i
        llama_cpp.llama_decode(ctx, batch)
        llama_cpp.llama_synchronize(ctx)
    return (N_GEN - 1) / ((time.perf_counter_ns() - started) / 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", default="")
    args = parser.parse_args()
    source = cached_tiny_llama(DATA / "models", MODEL)
    backend = LlamaCppBackend()
    model = backend.prepare(source, file_sha256(source), args.variant, DATA / "variants")
    backend.load(model, EngineSettings(threads=args.threads, n_ctx=256))
    prompt = backend.tokenize("hello world " * 40)[:N_PROMPT]
    ours, reference = [], []
    backend.generate([], prompt, N_GEN)  # warm-up
    for _ in range(args.rounds):
        rep = backend.generate([], prompt, N_GEN)
        ours.append((N_GEN - 1) / ((rep.token_ns[-1] - rep.token_ns[0]) / 1e9))
        reference.append(llama_bench_like(backend, prompt))
    ratio = statistics.median(ours) / statistics.median(reference)
    print(f"model {model.name} ({backend.variant()}), {args.threads} threads, "
          f"{args.rounds} alternating rounds of tg{N_GEN - 1} after pp{N_PROMPT}")  # fmt: skip
    medians = f"{statistics.median(ours):.1f} | {statistics.median(reference):.1f}"
    print("| ours decode tok/s | llama-bench-like loop tok/s | ratio |\n|---|---|---|")
    print(f"| {medians} | {ratio:.4f} |")
    backend.close()


if __name__ == "__main__":
    main()
