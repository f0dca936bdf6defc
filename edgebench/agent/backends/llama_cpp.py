"""llama.cpp through llama-cpp-python's low-level API.

The decode loop calls `llama_decode` and the engine's own C sampler chain directly, one
token at a time, and takes one `perf_counter_ns` timestamp per sampled token. Nothing
per token crosses into Python but the token id, so the loop runs close to the speed of
llama.cpp's own tools (the per-token Python cost of `Llama.generate` is what this avoids).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import llama_cpp
import psutil

from edgebench.agent.backends.base import BackendError, EngineSettings
from edgebench.measure.record import RepTiming

GGUF_MAGIC = b"GGUF"
# llama.h's llama_ftype values (GGUF `general.file_type`) -> variant names.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16",
}  # fmt: skip


def check_gguf(path: Path) -> None:
    """Refuses a missing file or one that is not a GGUF before llama.cpp sees it."""
    if not path.is_file():
        raise BackendError(f"model file not found: {path}")
    with path.open("rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise BackendError(f"not a GGUF model file: {path}")


class LlamaCppBackend:
    name = "llama_cpp"

    def __init__(self) -> None:
        self._llm: Any = None
        self._batch: Any = None
        self._batch_size = 0
        self._sampler: Any = None
        self._n_batch = 512
        self._threads = 0

    def engine_version(self) -> str:
        return str(llama_cpp.__version__)

    def system_info(self) -> str:
        return bytes(llama_cpp.llama_print_system_info()).decode(errors="replace").strip()

    def threads(self) -> int:
        return self._threads

    def variant(self) -> str:
        """The quantization the file declares in its own metadata."""
        file_type = str(self._loaded().metadata.get("general.file_type", ""))
        return (
            FILE_TYPES.get(int(file_type), f"ftype{file_type}")
            if file_type.isdigit()
            else "unknown"
        )

    def load(self, model_path: Path, settings: EngineSettings) -> None:
        check_gguf(model_path)
        self._threads = settings.threads or psutil.cpu_count(logical=False) or 1
        self._n_batch = settings.n_batch
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(model_path),
                n_ctx=settings.n_ctx,
                n_batch=settings.n_batch,
                n_ubatch=settings.n_batch,
                n_threads=self._threads,
                n_threads_batch=self._threads,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"llama.cpp could not load {model_path}: {exc}") from exc
        self._sampler = llama_cpp.llama_sampler_chain_init(
            llama_cpp.llama_sampler_chain_default_params()
        )
        llama_cpp.llama_sampler_chain_add(self._sampler, llama_cpp.llama_sampler_init_greedy())

    def tokenize(self, text: str) -> list[int]:
        tokens: list[int] = self._loaded().tokenize(text.encode(), add_bos=True, special=False)
        return tokens

    def generate(self, prompt: list[int], n_gen: int) -> RepTiming:
        llm = self._loaded()
        if len(prompt) + n_gen > llm.n_ctx():
            raise BackendError(
                f"prompt ({len(prompt)}) + generation ({n_gen}) exceed the context ({llm.n_ctx()})"
            )
        ctx = llm.ctx
        batch = self._ensure_batch(min(len(prompt), self._n_batch))
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        llama_cpp.llama_sampler_reset(self._sampler)
        clock = time.perf_counter_ns
        start = clock()
        for offset in range(0, len(prompt), self._n_batch):
            chunk = prompt[offset : offset + self._n_batch]
            last_chunk = offset + len(chunk) == len(prompt)
            self._fill(batch, chunk, offset, logits_last=last_chunk)
            self._decode(ctx, batch)
        llama_cpp.llama_synchronize(ctx)
        prefill_ns = clock() - start
        sample = llama_cpp.llama_sampler_sample
        sampler = self._sampler
        token = sample(sampler, ctx, -1)
        stamps = [clock() - start]
        position = len(prompt)
        one = self._fill
        for _ in range(n_gen - 1):
            one(batch, (token,), position, logits_last=True)
            self._decode(ctx, batch)
            token = sample(sampler, ctx, -1)
            stamps.append(clock() - start)
            position += 1
        return RepTiming(prefill_ns=prefill_ns, token_ns=tuple(stamps))

    def close(self) -> None:
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._sampler is not None:
            llama_cpp.llama_sampler_free(self._sampler)
            self._sampler = None
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    def _loaded(self) -> Any:
        if self._llm is None:
            raise BackendError("no model is loaded")
        return self._llm

    def _ensure_batch(self, size: int) -> Any:
        size = max(size, 1)
        if self._batch is None or self._batch_size < size:
            if self._batch is not None:
                llama_cpp.llama_batch_free(self._batch)
            self._batch = llama_cpp.llama_batch_init(size, 0, 1)
            self._batch_size = size
        return self._batch

    @staticmethod
    def _fill(batch: Any, tokens: Any, first_pos: int, *, logits_last: bool) -> None:
        count = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = first_pos + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 0
        if logits_last:
            batch.logits[count - 1] = 1
        batch.n_tokens = count

    @staticmethod
    def _decode(ctx: Any, batch: Any) -> None:
        status = llama_cpp.llama_decode(ctx, batch)
        if status != 0:
            raise BackendError(f"llama_decode failed with status {status}")
