"""llama.cpp through llama-cpp-python's low-level API.

The decode loop calls `llama_decode` and the engine's own C sampler chain directly, one
token at a time, and takes one `perf_counter_ns` timestamp per sampled token. Nothing
per token crosses into Python but the token id, so the loop runs close to the speed of
llama.cpp's own tools (the per-token Python cost of `Llama.generate` is what this avoids).
"""

from __future__ import annotations

import ctypes
import os
import time
from array import array
from pathlib import Path
from typing import Any

import llama_cpp
import psutil

from edgebench.agent.backends.base import (
    BackendError,
    EngineSettings,
    WorkloadError,
    check_variant,
)
from edgebench.engines import ENGINES, GGUF_MAGIC
from edgebench.measure.record import RepTiming
from edgebench.workload import FlashAttention

# llama_token and llama_pos are int32_t; the array type code whose items are 4 bytes.
_INT32 = next(code for code in "ilh" if array(code).itemsize == 4)

# llama.h's llama_ftype values (GGUF `general.file_type`) -> variant names.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16",
}  # fmt: skip
VARIANT_FTYPES = {name: code for code, name in FILE_TYPES.items()}
# Sources llama.cpp's quantizer takes without requantizing (which loses quality).
UNQUANTIZED = {"F32", "F16", "BF16"}


def check_gguf(path: Path) -> None:
    """Refuses a missing file or one that is not a GGUF before llama.cpp sees it."""
    if not path.is_file():
        raise BackendError(f"model file not found: {path}")
    with path.open("rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise WorkloadError(f"not a GGUF model file: {path}")


def gguf_file_type(path: Path) -> str:
    """The variant a GGUF file declares (`general.file_type`), read without loading it."""
    import gguf

    check_gguf(path)
    reader = gguf.GGUFReader(str(path), "r")
    field = reader.get_field("general.file_type")
    if field is None:
        return "F32"  # llama.cpp's own default when the key is absent
    code = int(field.contents())
    return FILE_TYPES.get(code, f"ftype{code}")


# llama.cpp's log is silenced, but the lines that say what `auto` settings became are
# kept while a context is made (llama-context.cpp: "Flash Attention enabled" or
# "Flash Attention not supported, set to disabled").
_kept_log: list[str] | None = None


@llama_cpp.llama_log_callback
def _drop_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    if _kept_log is not None and len(_kept_log) < 2000:
        _kept_log.append(bytes(text).decode(errors="replace"))


def flash_attention_from_log(lines: list[str]) -> str | None:
    """What llama.cpp's flash attention `auto` chose, from its log; None if it did not say."""
    for line in lines:
        if "Flash Attention" in line:
            return "off" if "disabled" in line else "on" if "enabled" in line else None
        if "forcing off" in line and "flash_attn" in line:
            return "off"
    return None


_initialized = False


def _init_quietly() -> None:
    """Initializes llama.cpp once, with its log (load and quantize chatter) silenced."""
    global _initialized
    if not _initialized:
        llama_cpp.llama_log_set(_drop_log, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _initialized = True


def _repack_default() -> bool:
    """Weight repacking (llama.cpp's extra CPU buffer types) is on, except on CPUs with
    Intel AMX: there llama.cpp 0.3.36's AMX matmul crashes on quantized weights (seen on
    this project's 2-core Xeon VM). `--repack` turns it back on."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True
    return "amx_tile" not in flags


_FLASH_ATTN_TYPES = {
    FlashAttention.AUTO: llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
    FlashAttention.ON: llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    FlashAttention.OFF: llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}


def _gpu_layers(requested: int | None) -> int:
    """Layers to offload: unset means all on a build that can offload (llama-bench's
    default), none on a CPU-only build; asking a CPU-only build for any is an error."""
    offloads = bool(llama_cpp.llama_supports_gpu_offload())
    if requested is None:
        return -1 if offloads else 0
    if requested != 0 and not offloads:
        raise BackendError(
            "this llama-cpp-python build cannot offload to a GPU: use -ngl 0, or reinstall "
            "it with CMAKE_ARGS='-DGGML_CUDA=on' (see the README)"
        )
    return requested


def _context_noting_auto(model: Any, params: Any) -> tuple[Any, str | None]:
    """Makes a context, keeping the log lines that say what flash attention became."""
    global _kept_log
    _kept_log = []
    try:
        ctx = llama_cpp.llama_init_from_model(model, params)
        return ctx, flash_attention_from_log(_kept_log)
    finally:
        _kept_log = None


class LlamaCppBackend:
    name = "llama_cpp"
    variants = ENGINES["llama_cpp"].variants

    def __init__(self) -> None:
        self._model: Any = None
        self._ctx: Any = None
        self._batch: Any = None
        self._batch_size = 0
        self._sampler: Any = None
        self._n_batch = 512
        self._threads = 0
        self._variant = ""
        self._repack = True
        self._in_force: dict[str, Any] = {}
        # The state after the last prompt-depth context, restored instead of prefilling the
        # same context again each rep (as llama-bench does): (context, saved state).
        self._depth: tuple[tuple[int, ...], Any] | None = None

    def engine_version(self) -> str:
        return str(llama_cpp.__version__)

    def build_info(self) -> dict[str, Any]:
        info = bytes(llama_cpp.llama_print_system_info()).decode(errors="replace").strip()
        return {
            "system_info": info,
            "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
            "repack": self._repack,
        }

    def threads(self) -> int:
        return self._threads

    def settings_in_force(self) -> dict[str, Any]:
        return dict(self._in_force)

    def variant(self) -> str:
        return self._variant

    def context_limit(self) -> int:
        return int(llama_cpp.llama_n_ctx(self._loaded()))

    def prepare(self, source: Path, source_sha256: str, variant: str, cache: Path) -> Path:
        check_variant(self.name, variant)
        have = gguf_file_type(source)
        if not variant or variant == have:
            return source
        if have not in UNQUANTIZED:
            raise WorkloadError(
                f"cannot make {variant} from a {have} model: quantize from an F32 or F16 GGUF"
            )
        target = cache / f"{source_sha256}-{variant.lower()}.gguf"
        if target.is_file():
            return target
        cache.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        _init_quietly()
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = VARIANT_FTYPES[variant]
        params.nthread = psutil.cpu_count(logical=False) or 1
        status = llama_cpp.llama_model_quantize(
            str(source).encode(), str(partial).encode(), ctypes.byref(params)
        )
        if status != 0 or not partial.is_file():
            partial.unlink(missing_ok=True)
            raise BackendError(f"llama.cpp could not quantize {source.name} to {variant}")
        os.replace(partial, target)
        return target

    def load(self, model_path: Path, settings: EngineSettings) -> None:
        check_gguf(model_path)
        _init_quietly()
        self._depth = None  # a state saved under another model must never come back
        gpu_layers = _gpu_layers(settings.n_gpu_layers)
        self._threads = settings.threads or psutil.cpu_count(logical=False) or 1
        self._n_batch = settings.n_batch
        self._repack = _repack_default() if settings.repack is None else settings.repack
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0x7FFFFFFF if gpu_layers < 0 else gpu_layers
        model_params.use_extra_bufts = self._repack
        self._model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), model_params)
        if not self._model:
            raise BackendError(f"llama.cpp could not load {model_path}")
        ctx_params = llama_cpp.llama_context_default_params()
        ctx_params.n_ctx = settings.n_ctx
        ctx_params.n_batch = settings.n_batch
        ctx_params.n_ubatch = min(settings.n_ubatch, settings.n_batch)
        ctx_params.n_threads = self._threads
        ctx_params.n_threads_batch = self._threads
        ctx_params.flash_attn_type = _FLASH_ATTN_TYPES[settings.flash_attn]
        self._ctx, chosen = _context_noting_auto(self._model, ctx_params)
        if not self._ctx:
            self.close()
            raise BackendError(f"llama.cpp could not create a context for {model_path}")
        flash = settings.flash_attn.value if settings.flash_attn != FlashAttention.AUTO else chosen
        self._in_force = {"n_gpu_layers": gpu_layers, "flash_attn": flash}
        self._variant = self._file_type()
        self._sampler = llama_cpp.llama_sampler_chain_init(
            llama_cpp.llama_sampler_chain_default_params()
        )
        llama_cpp.llama_sampler_chain_add(self._sampler, llama_cpp.llama_sampler_init_greedy())

    def tokenize(self, text: str) -> list[int]:
        vocab = llama_cpp.llama_model_get_vocab(self._loaded_model())
        data = text.encode()
        capacity = len(data) + 8
        tokens = (llama_cpp.llama_token * capacity)()
        count = llama_cpp.llama_tokenize(vocab, data, len(data), tokens, capacity, True, False)
        if count < 0:
            raise BackendError("llama.cpp could not tokenize the prompt corpus")
        return list(tokens[:count])

    def generate(self, context: list[int], prompt: list[int], n_gen: int) -> RepTiming:
        ctx = self._loaded()
        needed = len(context) + len(prompt) + n_gen
        limit = self.context_limit()
        if needed > limit:
            raise WorkloadError(
                f"depth + prompt + generation ({needed}) exceed the context ({limit})"
            )
        batch = self._ensure_batch(min(max(len(prompt), len(context)), self._n_batch))
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        llama_cpp.llama_sampler_reset(self._sampler)
        self._enter_context(ctx, batch, context)
        clock = time.perf_counter_ns
        start = clock()
        self._feed(ctx, batch, prompt, len(context), logits_last=True)
        llama_cpp.llama_synchronize(ctx)
        prefill_ns = clock() - start
        sample, decode = llama_cpp.llama_sampler_sample, llama_cpp.llama_decode
        sampler = self._sampler
        token = sample(sampler, ctx, -1)
        stamps = [clock() - start]
        append = stamps.append
        # One-token batch: only the token and its position change from step to step.
        self._fill(batch, (token,), 0, logits_last=True)
        tokens, positions = batch.token, batch.pos
        position = len(context) + len(prompt)
        for _ in range(n_gen - 1):
            tokens[0] = token
            positions[0] = position
            status = decode(ctx, batch)
            if status != 0:
                raise BackendError(f"llama_decode failed with status {status}")
            token = sample(sampler, ctx, -1)
            append(clock() - start)
            position += 1
        return RepTiming(prefill_ns=prefill_ns, token_ns=tuple(stamps), start_ns=start)

    def _enter_context(self, ctx: Any, batch: Any, context: list[int]) -> None:
        """Puts the prompt-depth context in the cleared KV cache: restored from the state
        saved after the same context last time, else prefilled (untimed) and saved. A
        deep context then costs one prefill per test instead of one per rep."""
        key = tuple(context)
        if self._depth is not None and self._depth[0] == key:
            state = self._depth[1]
            if llama_cpp.llama_state_seq_set_data(ctx, state, len(state), 0) == len(state):
                return
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        self._depth = None
        self._feed(ctx, batch, context, 0, logits_last=False)
        llama_cpp.llama_synchronize(ctx)
        if context and self._depth_fits(size := llama_cpp.llama_state_seq_get_size(ctx, 0)):
            state = (ctypes.c_uint8 * size)()
            if llama_cpp.llama_state_seq_get_data(ctx, state, size, 0) == size:
                self._depth = (key, state)

    @staticmethod
    def _depth_fits(size: int) -> bool:
        """A copy of the context's state is kept only while it is small next to the free
        memory (a deep context of a big model holds gigabytes)."""
        return size < psutil.virtual_memory().available // 4

    def _feed(
        self, ctx: Any, batch: Any, tokens: list[int], first: int, *, logits_last: bool
    ) -> None:
        for offset in range(0, len(tokens), self._n_batch):
            chunk = tokens[offset : offset + self._n_batch]
            last = logits_last and offset + len(chunk) == len(tokens)
            self._fill(batch, chunk, first + offset, logits_last=last)
            self._decode(ctx, batch)

    def close(self) -> None:
        self._depth = None
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._sampler is not None:
            llama_cpp.llama_sampler_free(self._sampler)
            self._sampler = None
        if self._ctx is not None:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model is not None:
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def _loaded(self) -> Any:
        if self._ctx is None:
            raise BackendError("no model is loaded")
        return self._ctx

    def _loaded_model(self) -> Any:
        if self._model is None:
            raise BackendError("no model is loaded")
        return self._model

    def _file_type(self) -> str:
        buffer = ctypes.create_string_buffer(64)
        length = llama_cpp.llama_model_meta_val_str(
            self._loaded_model(), b"general.file_type", buffer, len(buffer)
        )
        if length < 0:
            return "F32"
        code = int(buffer.value.decode() or 0)
        return FILE_TYPES.get(code, f"ftype{code}")

    def _ensure_batch(self, size: int) -> Any:
        size = max(size, 1)
        if self._batch is None or self._batch_size < size:
            if self._batch is not None:
                llama_cpp.llama_batch_free(self._batch)
            self._batch = llama_cpp.llama_batch_init(size, 0, 1)
            self._batch_size = size
            for i in range(size):
                self._batch.n_seq_id[i] = 1
                self._batch.seq_id[i][0] = 0
        return self._batch

    @staticmethod
    def _fill(batch: Any, tokens: Any, first_pos: int, *, logits_last: bool) -> None:
        """Ids, positions and output flags of one chunk, copied in whole: inside the timed
        prefill, a Python loop over the fields took 0.64 ms for 512 tokens here, a fifth of
        an H200's whole pp512; this takes 0.06 ms. Every token is in sequence 0, set once
        when the batch was made."""
        count = len(tokens)
        ids = array(_INT32, tokens)  # named: the buffer must outlive the copy
        positions = array(_INT32, range(first_pos, first_pos + count))
        ctypes.memmove(batch.token, ids.buffer_info()[0], count * 4)
        ctypes.memmove(batch.pos, positions.buffer_info()[0], count * 4)
        ctypes.memset(batch.logits, 0, count)
        if logits_last:
            batch.logits[count - 1] = 1
        batch.n_tokens = count

    @staticmethod
    def _decode(ctx: Any, batch: Any) -> None:
        status = llama_cpp.llama_decode(ctx, batch)
        if status != 0:
            raise BackendError(f"llama_decode failed with status {status}")
