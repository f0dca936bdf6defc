"""Hugging Face transformers on PyTorch: a manual greedy loop over the model's forward
with its KV cache, one timestamp per token (after the argmax is known on the host, so a
GPU's asynchronous queue cannot hide work)."""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any

import psutil
import torch

from edgebench.agent.backends.base import BackendError, EngineSettings, check_variant
from edgebench.engines import ENGINES
from edgebench.measure.record import RepTiming

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class TransformersBackend:
    name = "transformers"
    variants = ENGINES["transformers"].variants

    def __init__(self) -> None:
        self._model: Any = None
        self._tokenizer: Any = None
        self._threads = 0
        self._variant = ""
        self._device = "cpu"
        self._max_length = 0
        self._cache_keyword = "past_key_values"

    def engine_version(self) -> str:
        import transformers

        return f"transformers {transformers.__version__} / torch {torch.__version__}"

    def build_info(self) -> dict[str, Any]:
        return {
            "torch_threads": torch.get_num_threads(),
            "cuda_available": torch.cuda.is_available(),
            "torch_config": torch.__config__.show().splitlines()[:6],
        }

    def threads(self) -> int:
        return self._threads

    def settings_in_force(self) -> dict[str, Any]:
        return {}

    def variant(self) -> str:
        return self._variant

    def context_limit(self) -> int:
        return self._max_length

    def prepare(self, source: Path, source_sha256: str, variant: str, cache: Path) -> Path:
        check_variant(self.name, variant)
        if not (source / "config.json").is_file():
            raise BackendError(f"not a transformers model folder (no config.json): {source}")
        self._variant = variant or "fp32"  # the dtype is chosen at load; no file to make
        return source

    def load(self, model_path: Path, settings: EngineSettings) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()

        self._threads = settings.threads or psutil.cpu_count(logical=False) or 1
        torch.set_num_threads(self._threads)
        self._variant = self._variant or "fp32"
        self._device = _device(settings.provider)
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(model_path)
            model: Any = AutoModelForCausalLM.from_pretrained(
                model_path, dtype=DTYPES[self._variant]
            )
            self._model = model.to(self._device).eval()
        except (OSError, ValueError) as exc:
            raise BackendError(f"transformers could not load {model_path}: {exc}") from exc
        self._cache_keyword = _cache_keyword(self._model)
        self._max_length = min(
            settings.n_ctx, int(getattr(self._model.config, "max_position_embeddings", 1 << 30))
        )

    def tokenize(self, text: str) -> list[int]:
        if self._tokenizer is None:
            raise BackendError("no model is loaded")
        ids: list[int] = self._tokenizer(text)["input_ids"]
        bos = self._tokenizer.bos_token_id
        return ids if bos is None or (ids and ids[0] == bos) else [bos, *ids]

    @torch.inference_mode()
    def generate(self, context: list[int], prompt: list[int], n_gen: int) -> RepTiming:
        model = self._model
        if model is None:
            raise BackendError("no model is loaded")
        total = len(context) + len(prompt) + n_gen
        if total > self._max_length:
            raise BackendError(f"depth + prompt + generation ({total}) exceed the context")
        from transformers import DynamicCache

        kv = {self._cache_keyword: DynamicCache(), "use_cache": True}
        if context:
            model(input_ids=self._ids(context), **kv)
        clock = time.perf_counter_ns
        start = clock()
        out = model(input_ids=self._ids(prompt), logits_to_keep=1, **kv)
        token = int(out.logits[0, -1].argmax())
        prefill_ns = clock() - start  # the argmax on the host marks the end of the prefill
        stamps = [prefill_ns]
        for _ in range(n_gen - 1):
            out = model(input_ids=self._ids([token]), **kv)
            token = int(out.logits[0, -1].argmax())
            stamps.append(clock() - start)
        return RepTiming(prefill_ns=prefill_ns, token_ns=tuple(stamps), start_ns=start)

    def close(self) -> None:
        self._model = None
        self._tokenizer = None
        if self._device == "cuda":
            torch.cuda.empty_cache()  # the next run's GPU memory figure is its own

    def _ids(self, tokens: list[int]) -> torch.Tensor:
        return torch.tensor([tokens], dtype=torch.long, device=self._device)


def _device(provider: str) -> str:
    if provider not in ("cpu", "cuda"):
        raise BackendError(f"transformers runs on cpu or cuda, not {provider!r}")
    if provider == "cuda" and not torch.cuda.is_available():
        raise BackendError(
            f"transformers cannot run on cuda here: torch {torch.__version__} sees no CUDA GPU"
        )
    return provider


def _cache_keyword(model: Any) -> str:
    """transformers 5.x names the KV cache argument `cache` (and warns that
    `past_key_values` goes away); 4.x knows only `past_key_values`."""
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"
