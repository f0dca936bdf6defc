"""ONNX Runtime through onnxruntime-genai: a causal decoder with its KV cache managed by
the engine, greedy search in C++, one timestamp per `generate_next_token`.

The model is an onnxruntime-genai folder (`genai_config.json`, `model.onnx`, tokenizer).
The int8 variant is made with ONNX Runtime's dynamic quantizer and cached.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import onnxruntime
import onnxruntime_genai as og
import psutil

from edgebench.agent.backends import VARIANTS
from edgebench.agent.backends.base import BackendError, EngineSettings, check_variant
from edgebench.measure.record import RepTiming

GENAI_CONFIG = "genai_config.json"
PROVIDERS = {"cpu": "", "cuda": "cuda", "tensorrt": "NvTensorRtRtx", "dml": "dml"}


def check_genai_folder(path: Path) -> None:
    if not path.is_dir() or not (path / GENAI_CONFIG).is_file():
        raise BackendError(f"not an onnxruntime-genai model folder (no {GENAI_CONFIG}): {path}")


class OnnxBackend:
    name = "onnx"
    variants = VARIANTS["onnx"]

    def __init__(self) -> None:
        self._model: Any = None
        self._tokenizer: Any = None
        self._threads = 0
        self._variant = ""
        self._max_length = 0
        self._provider = "cpu"

    def engine_version(self) -> str:
        return f"onnxruntime-genai {og.__version__} / onnxruntime {onnxruntime.__version__}"

    def build_info(self) -> dict[str, Any]:
        return {
            "ort_providers": onnxruntime.get_available_providers(),
            "provider": self._provider,
            "cuda_available": bool(og.is_cuda_available()),
        }

    def threads(self) -> int:
        return self._threads

    def variant(self) -> str:
        return self._variant

    def context_limit(self) -> int:
        return self._max_length

    def prepare(self, source: Path, source_sha256: str, variant: str, cache: Path) -> Path:
        check_variant(self.name, self.variants, variant)
        check_genai_folder(source)
        declared = _declared_precision(source)
        self._variant = variant or declared
        if not variant or variant == declared:
            return source
        if declared != "fp32":
            raise BackendError(
                f"cannot make {variant} from a {declared} ONNX model: start from fp32"
            )
        target = cache / f"{source_sha256}-onnx-{variant}"
        if not target.is_dir():
            _quantize_int8(source, target)
        return target

    def load(self, model_path: Path, settings: EngineSettings) -> None:
        check_genai_folder(model_path)
        self._threads = settings.threads or psutil.cpu_count(logical=False) or 1
        self._provider = settings.provider
        if settings.provider not in PROVIDERS:
            raise BackendError(f"unknown ONNX Runtime provider {settings.provider!r}")
        config = og.Config(str(model_path))
        options = {"intra_op_num_threads": self._threads, "inter_op_num_threads": 1}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
        if settings.provider != "cpu":
            config.clear_providers()
            config.append_provider(PROVIDERS[settings.provider])
        try:
            self._model = og.Model(config)
        except Exception as exc:  # onnxruntime-genai raises plain RuntimeError/OrtException
            raise BackendError(f"ONNX Runtime could not load {model_path}: {exc}") from exc
        self._tokenizer = og.Tokenizer(self._model)
        self._variant = self._variant or _declared_precision(model_path)
        self._max_length = settings.n_ctx

    def tokenize(self, text: str) -> list[int]:
        return [int(t) for t in self._loaded_tokenizer().encode(text)]

    def generate(self, context: list[int], prompt: list[int], n_gen: int) -> RepTiming:
        if self._model is None:
            raise BackendError("no model is loaded")
        total = len(context) + len(prompt) + n_gen
        if total > self._max_length:
            raise BackendError(f"depth + prompt + generation ({total}) exceed the context")
        params = og.GeneratorParams(self._model)
        # min_length = max_length: EOS is masked until exactly n_gen tokens are out.
        params.set_search_options(max_length=total, min_length=total, do_sample=False)
        generator = og.Generator(self._model, params)
        if context:
            generator.append_tokens(context)
        clock = time.perf_counter_ns
        start = clock()
        generator.append_tokens(prompt)
        prefill_ns = clock() - start
        stamps = []
        step = generator.generate_next_token
        for _ in range(n_gen):
            step()
            stamps.append(clock() - start)
        return RepTiming(prefill_ns=prefill_ns, token_ns=tuple(stamps), start_ns=start)

    def close(self) -> None:
        self._tokenizer = None
        self._model = None

    def _loaded_tokenizer(self) -> Any:
        if self._tokenizer is None:
            raise BackendError("no model is loaded")
        return self._tokenizer


def _declared_precision(folder: Path) -> str:
    """fp32 unless the folder says it was quantized (by us or by the genai builder)."""
    marker = folder / "edgebench-variant.txt"
    if marker.is_file():
        return marker.read_text().strip()
    model = folder / "model.onnx"
    if model.is_file():
        import onnx

        graph = onnx.load(str(model), load_external_data=False).graph
        ops = {node.op_type for node in graph.node}
        if "MatMulNBits" in ops:
            return "int4"
        if ops & {"MatMulInteger", "DynamicQuantizeMatMul"}:
            return "int8"
    return "fp32"


def _quantize_int8(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for item in source.iterdir():
        if item.is_file() and not item.name.startswith("model.onnx"):
            shutil.copy2(item, partial / item.name)
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the quantizer warns on the root logger about pre-processing
    try:
        quantize_dynamic(
            str(source / "model.onnx"),
            str(partial / "model.onnx"),
            weight_type=QuantType.QInt8,
            use_external_data_format=True,
        )
    except Exception as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise BackendError(f"ONNX Runtime could not quantize {source.name} to int8: {exc}") from exc
    finally:
        quiet.setLevel(level)
    (partial / "edgebench-variant.txt").write_text("int8\n")
    os.replace(partial, target)
