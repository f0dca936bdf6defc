"""Why decode can trail llama-bench's tg: what runs just before the decode, in one process.

Three ways to decode the same tokens at the same depth, alternated rep by rep on the
model of benchmarks/reference.py (paired ratios, so the VM's drift cancels):

- ours: our llama.cpp backend's `generate` (depth, then the timed prompt, then decode);
- bare after prefill: the same prefill, then a bare `llama_decode` loop without sampling
  (llama-bench's tg loop): ours / this is our loop's own cost;
- bare after restore: the context restored from a saved state, then the bare loop, the
  sequence llama-bench's tg runs: this / bare after prefill is what the prompt's prefill
  just before costs the decode that follows it.

Usage: .venv/bin/python -m benchmarks.decode_sequence [--variant F32] [--pairs 40]
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import statistics
import time
from collections.abc import Callable

import llama_cpp

from benchmarks.reference import DATA, MODEL
from edgebench.agent.backends.base import EngineSettings
from edgebench.agent.backends.llama_cpp import LlamaCppBackend
from edgebench.modelgen import cached_tiny_llama

DEPTH, PROMPT, GEN = 64, 64, 64


class Sequences:
    def __init__(self, variant: str, threads: int) -> None:
        source = cached_tiny_llama(DATA / "models", MODEL)
        sha = hashlib.sha256(source.read_bytes()).hexdigest()
        self.backend = LlamaCppBackend()
        path = self.backend.prepare(source, sha, variant, DATA / "variants")
        self.backend.load(path, EngineSettings(threads=threads, n_ctx=256))
        vocab = 400  # ids below the generated vocabulary's size
        self.tokens = [5 + (i * 7) % vocab for i in range(DEPTH + PROMPT)]
        self.ctx = self.backend._loaded()
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self._prefill()  # the state after depth + prompt, saved for the restores
        size = llama_cpp.llama_state_seq_get_size(self.ctx, 0)
        self.state = (ctypes.c_uint8 * size)()
        llama_cpp.llama_state_seq_get_data(self.ctx, self.state, size, 0)

    def _prefill(self) -> None:
        self.backend.generate(self.tokens[:DEPTH], self.tokens[DEPTH:], 1)

    def ours(self) -> float:
        rep = self.backend.generate(self.tokens[:DEPTH], self.tokens[DEPTH:], GEN)
        return (len(rep.token_ns) - 1) / ((rep.token_ns[-1] - rep.token_ns[0]) / 1e9)

    def bare_after_prefill(self) -> float:
        self._prefill()
        return self._bare_loop()

    def bare_after_restore(self) -> float:
        llama_cpp.llama_memory_clear(self.memory, True)
        llama_cpp.llama_state_seq_set_data(self.ctx, self.state, len(self.state), 0)
        return self._bare_loop()

    def _bare_loop(self) -> float:
        batch = llama_cpp.llama_batch_init(1, 0, 1)
        try:
            batch.n_tokens, batch.n_seq_id[0], batch.seq_id[0][0], batch.logits[0] = 1, 1, 0, 1
            started = time.perf_counter_ns()
            for position in range(DEPTH + PROMPT, DEPTH + PROMPT + GEN - 1):
                batch.token[0], batch.pos[0] = 7, position
                if llama_cpp.llama_decode(self.ctx, batch) != 0:
                    raise RuntimeError("llama_decode failed")
                llama_cpp.llama_synchronize(self.ctx)
            return (GEN - 1) / ((time.perf_counter_ns() - started) / 1e9)
        finally:
            llama_cpp.llama_batch_free(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="F32")
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    runs = Sequences(args.variant, args.threads)
    ways: dict[str, Callable[[], float]] = {
        "ours": runs.ours,
        "bare after prefill": runs.bare_after_prefill,
        "bare after restore": runs.bare_after_restore,
    }
    for way in ways.values():
        way()  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.pairs):
        for name, way in ways.items():
            rates[name].append(way())
    print(f"{args.variant}, {args.threads} threads, depth {DEPTH} + prompt {PROMPT}, "
          f"{GEN - 1} decoded tokens, {args.pairs} alternations\n")  # fmt: skip
    print("| decode | median tok/s | paired ratio to bare after prefill |")
    print("|---|---|---|")
    base = rates["bare after prefill"]
    for name, values in rates.items():
        ratio = statistics.median(v / b for v, b in zip(values, base, strict=True))
        print(f"| {name} | {statistics.median(values):.1f} | {ratio:.4f} |")


if __name__ == "__main__":
    main()
