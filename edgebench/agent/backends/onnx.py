"""ONNX Runtime: a causal decoder with a KV cache, run by one of two loops.

- An onnxruntime-genai folder (`genai_config.json`, `model.onnx`, tokenizer) runs through
  onnxruntime-genai: the engine keeps the KV cache and its C++ greedy search picks each
  token; one timestamp per `generate_next_token`.
- Any other folder with a `model.onnx` decoder that takes its KV cache as inputs and
  returns it as outputs (`past_key_values.N.key` in, `present.N.key` out, as Optimum and
  most exporters name them) runs through our own greedy loop over an ONNX Runtime
  session: each step feeds the previous step's present tensors back as the past, takes
  the argmax of the last position's logits, and is stamped once the token id is known.
  The tokenizer is the folder's `tokenizer.json`.

The int8 variant of either is made with ONNX Runtime's dynamic quantizer and cached.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime
import psutil

from edgebench.agent.backends.base import (
    BackendError,
    EngineSettings,
    WorkloadError,
    check_variant,
)
from edgebench.engines import ENGINES
from edgebench.measure.record import RepTiming

log = logging.getLogger(__name__)

GENAI_CONFIG = "genai_config.json"
MODEL_FILE = "model.onnx"
# --provider -> onnxruntime-genai's provider name, and ONNX Runtime's execution providers.
GENAI_PROVIDERS = {"cpu": "", "cuda": "cuda", "tensorrt": "NvTensorRtRtx", "dml": "dml"}
ORT_PROVIDERS = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
    "dml": ("DmlExecutionProvider", "CPUExecutionProvider"),
}
CONTEXT_CHUNK = 512  # depth tokens fed to the greedy loop's graph per untimed step
# Where the present tensors stay between steps (IOBinding's device names).
OUTPUT_DEVICES = {"cpu": "cpu", "cuda": "cuda", "tensorrt": "cuda", "dml": "dml"}
_TENSOR_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
_ID_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


def check_onnx_folder(path: Path) -> None:
    if not path.is_dir() or not ((path / GENAI_CONFIG).is_file() or (path / MODEL_FILE).is_file()):
        raise BackendError(
            f"not an ONNX model folder (neither {GENAI_CONFIG} nor {MODEL_FILE}): {path}"
        )


def is_genai_folder(path: Path) -> bool:
    return (path / GENAI_CONFIG).is_file()


class _Decoder(Protocol):
    loop: str

    def tokenize(self, text: str) -> list[int]: ...

    def generate(self, context: list[int], prompt: list[int], total: int) -> RepTiming: ...


class OnnxBackend:
    name = "onnx"
    variants = ENGINES["onnx"].variants

    def __init__(self) -> None:
        self._decoder: _Decoder | None = None
        self._threads = 0
        self._variant = ""
        self._max_length = 0
        self._provider = "cpu"

    def engine_version(self) -> str:
        version = f"onnxruntime {onnxruntime.__version__}"
        if self._decoder is not None and self._decoder.loop == "genai":
            import onnxruntime_genai as og

            return f"onnxruntime-genai {og.__version__} / {version}"
        return version

    def build_info(self) -> dict[str, Any]:
        return {
            "ort_providers": onnxruntime.get_available_providers(),
            "provider": self._provider,
            "loop": self._decoder.loop if self._decoder is not None else "",
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
        check_onnx_folder(source)
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
        check_onnx_folder(model_path)
        if settings.provider not in ORT_PROVIDERS:
            raise BackendError(
                f"unknown ONNX Runtime provider {settings.provider!r}; "
                f"known: {', '.join(ORT_PROVIDERS)}"
            )
        self._threads = settings.threads or psutil.cpu_count(logical=False) or 1
        self._provider = settings.provider
        if is_genai_folder(model_path):
            self._decoder = _GenaiDecoder(model_path, self._threads, settings.provider)
        else:
            self._decoder = _GreedyDecoder(model_path, self._threads, settings.provider)
        self._variant = self._variant or _declared_precision(model_path)
        self._max_length = settings.n_ctx

    def tokenize(self, text: str) -> list[int]:
        return self._loaded().tokenize(text)

    def generate(self, context: list[int], prompt: list[int], n_gen: int) -> RepTiming:
        decoder = self._loaded()
        total = len(context) + len(prompt) + n_gen
        if total > self._max_length:
            raise WorkloadError(f"depth + prompt + generation ({total}) exceed the context")
        return decoder.generate(context, prompt, total)

    def close(self) -> None:
        self._decoder = None

    def _loaded(self) -> _Decoder:
        if self._decoder is None:
            raise BackendError("no model is loaded")
        return self._decoder


class _GenaiDecoder:
    loop = "genai"

    def __init__(self, folder: Path, threads: int, provider: str) -> None:
        try:
            import onnxruntime_genai as og
        except ImportError as exc:
            raise BackendError(
                f"{folder} is an onnxruntime-genai folder: pip install onnxruntime-genai ({exc})"
            ) from exc
        self._og = og
        config = og.Config(str(folder))
        options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
        if provider != "cpu":
            load_gpu_libraries(provider)
            config.clear_providers()
            config.append_provider(GENAI_PROVIDERS[provider])
        try:
            self._model = og.Model(config)
        except Exception as exc:  # onnxruntime-genai raises plain RuntimeError/OrtException
            raise BackendError(f"ONNX Runtime could not load {folder}: {exc}") from exc
        self._tokenizer = og.Tokenizer(self._model)

    def tokenize(self, text: str) -> list[int]:
        return [int(t) for t in self._tokenizer.encode(text)]

    def generate(self, context: list[int], prompt: list[int], total: int) -> RepTiming:
        og = self._og
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
        for _ in range(total - len(context) - len(prompt)):
            step()
            stamps.append(clock() - start)
        return RepTiming(prefill_ns=prefill_ns, token_ns=tuple(stamps), start_ns=start)


@dataclass(frozen=True)
class KvTensor:
    """One past input, the present output that feeds it next step, its empty shape."""

    past: str
    present: str
    empty_shape: tuple[int, ...]
    dtype: Any


@dataclass(frozen=True)
class DecoderLayout:
    """What a decoder ONNX graph takes and gives, read from its inputs and outputs."""

    ids: str
    ids_dtype: Any
    attention_mask: str | None
    position_ids: str | None
    logits: str
    kv: tuple[KvTensor, ...]
    mask_dtype: Any = np.int64
    positions_dtype: Any = np.int64

    def feeds(self, tokens: list[int], offset: int) -> dict[str, np.ndarray]:
        """The inputs of one step but the past: `tokens` at positions from `offset`."""
        feeds = {self.ids: np.asarray([tokens], dtype=self.ids_dtype)}
        if self.attention_mask:
            feeds[self.attention_mask] = np.ones((1, offset + len(tokens)), dtype=self.mask_dtype)
        if self.position_ids:
            positions = np.arange(offset, offset + len(tokens), dtype=self.positions_dtype)
            feeds[self.position_ids] = positions[np.newaxis, :]
        return feeds


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str | None, ...]
    type: str


def read_layout(
    inputs: list[TensorSpec], outputs: list[TensorSpec], kv_dims: tuple[int, int] | None
) -> DecoderLayout:
    """The decoder's layout, or a clear error for a graph our loop cannot drive.
    `kv_dims` (KV heads, head size, from the folder's config) sizes an empty past whose
    graph leaves those dimensions symbolic."""
    by_name = {spec.name: spec for spec in inputs}
    if "input_ids" not in by_name:
        raise WorkloadError("the ONNX decoder has no input named input_ids")
    outputs_by_name = {spec.name: spec for spec in outputs}
    output_names = set(outputs_by_name)
    if "logits" not in output_names:
        raise WorkloadError("the ONNX decoder has no output named logits")
    if len(outputs_by_name["logits"].shape) != 3:
        raise BackendError(
            f"the ONNX decoder's logits have {len(outputs_by_name['logits'].shape)} "
            "dimensions; our loop reads [batch, sequence, vocabulary]"
        )
    known = {"input_ids", "attention_mask", "position_ids"}
    unknown = sorted(name for name in by_name if name not in known and not _is_past(name))
    if unknown:
        raise WorkloadError(f"the ONNX decoder takes inputs our loop cannot feed: {unknown}")
    kv = tuple(_kv_tensor(spec, output_names, kv_dims) for spec in inputs if _is_past(spec.name))
    if not kv:
        raise WorkloadError("the ONNX decoder takes no past KV cache (past_key_values.N.key)")
    mask, positions = by_name.get("attention_mask"), by_name.get("position_ids")
    return DecoderLayout(
        ids="input_ids",
        ids_dtype=_index_dtype(by_name["input_ids"]),
        attention_mask=mask.name if mask else None,
        position_ids=positions.name if positions else None,
        logits="logits",
        kv=kv,
        mask_dtype=_index_dtype(mask) if mask else np.int64,
        positions_dtype=_index_dtype(positions) if positions else np.int64,
    )


def _index_dtype(spec: TensorSpec) -> Any:
    if spec.type not in _ID_TYPES:
        raise WorkloadError(f"the ONNX decoder's {spec.name} is {spec.type}, not int64/int32")
    return _ID_TYPES[spec.type]


def _is_past(name: str) -> bool:
    return name.startswith(("past_key_values.", "past."))


def _kv_tensor(
    spec: TensorSpec, output_names: set[str], kv_dims: tuple[int, int] | None
) -> KvTensor:
    present = "present." + spec.name.split(".", 1)[1]
    if present not in output_names:
        raise WorkloadError(f"the ONNX decoder has {spec.name} but no output {present}")
    if spec.type not in _TENSOR_TYPES:
        raise WorkloadError(f"{spec.name} is {spec.type}; our loop feeds float32 or float16")
    if len(spec.shape) != 4:
        raise BackendError(
            f"{spec.name} has {len(spec.shape)} dimensions; our loop feeds "
            "[batch, kv heads, past length, head size]"
        )
    shape = (1, _kv_dim(spec, 1, kv_dims), 0, _kv_dim(spec, 3, kv_dims))
    return KvTensor(spec.name, present, shape, _TENSOR_TYPES[spec.type])


def _kv_dim(spec: TensorSpec, axis: int, kv_dims: tuple[int, int] | None) -> int:
    """The heads (axis 1) or head size (axis 3) of a past input: the graph's own number,
    else the config's."""
    value = spec.shape[axis]
    if isinstance(value, int):
        return value
    if kv_dims is None:
        raise BackendError(
            f"{spec.name} leaves its heads or head size open and the folder has no "
            "config.json to read them from"
        )
    return kv_dims[0] if axis == 1 else kv_dims[1]


def kv_dims_from_config(folder: Path) -> tuple[int, int] | None:
    """(KV heads, head size) from a transformers config.json beside the model."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
        heads = int(config.get("num_key_value_heads") or config["num_attention_heads"])
        head_size = int(
            config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        )
    except (ValueError, KeyError, TypeError, ZeroDivisionError) as exc:
        raise BackendError(f"cannot read the KV cache's shape from {path}: {exc}") from exc
    return heads, head_size


class _GreedyDecoder:
    loop = "greedy"

    def __init__(self, folder: Path, threads: int, provider: str) -> None:
        self._tokenizer = _load_tokenizer(folder)
        self._session = _session(folder / MODEL_FILE, threads, provider)
        self._layout = read_layout(
            [_spec(arg) for arg in self._session.get_inputs()],
            [_spec(arg) for arg in self._session.get_outputs()],
            kv_dims_from_config(folder),
        )
        # The KV cache stays in ONNX Runtime's own tensors, on the provider's device, from
        # step to step: only the ids go in and the last logits come out through numpy.
        self._device = OUTPUT_DEVICES[provider]
        self._outputs = [self._layout.logits, *(kv.present for kv in self._layout.kv)]
        # On the CPU nothing needs binding to a device, so a step runs on the native
        # session with the native tensors: no IOBinding wrappers, no tensor wrapping
        # (1.18x the decode rate of the bound path on the tests' 2-layer model, paired;
        # the public run_with_ort_values is slower: it iterates its result vector, which
        # ends in a C++ exception). The bound path stays for GPUs and for an ONNX Runtime
        # whose session lacks the native call.
        native_run = getattr(getattr(self._session, "_sess", None), "run_with_ort_values", None)
        self._native_run: Callable[..., Any] | None = native_run if self._device == "cpu" else None

    def tokenize(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text).ids)

    def generate(self, context: list[int], prompt: list[int], total: int) -> RepTiming:
        past = self._empty_past()
        # The untimed depth in chunks: a graph returns logits for every position it is
        # fed, and a deep context times a large vocabulary would not fit in memory.
        for offset in range(0, len(context), CONTEXT_CHUNK):
            _, past = self._step(context[offset : offset + CONTEXT_CHUNK], offset, past)
        clock = time.perf_counter_ns
        start = clock()
        logits, past = self._step(prompt, len(context), past)
        prefill_ns = clock() - start
        token = int(logits.argmax())
        stamps = [clock() - start]
        for position in range(len(context) + len(prompt), total - 1):
            logits, past = self._step([token], position, past)
            token = int(logits.argmax())
            stamps.append(clock() - start)
        return RepTiming(prefill_ns=prefill_ns, token_ns=tuple(stamps), start_ns=start)

    def _empty_past(self) -> list[Any]:
        if self._native_run is not None:  # tensors that own their (empty) memory
            return [
                onnxruntime.OrtValue.ortvalue_from_shape_and_type(
                    kv.empty_shape, kv.dtype
                )._ortvalue
                for kv in self._layout.kv
            ]
        return [
            onnxruntime.OrtValue.ortvalue_from_numpy(np.zeros(kv.empty_shape, dtype=kv.dtype))
            for kv in self._layout.kv
        ]

    def _step(
        self, tokens: list[int], offset: int, past: list[Any]
    ) -> tuple[np.ndarray, list[Any]]:
        """One forward pass: the last position's logits and the next step's past."""
        run = self._native_run
        try:
            if run is None:
                return self._bound_step(tokens, offset, past)
            return self._native_step(run, tokens, offset, past)
        except Exception as exc:  # ONNX Runtime raises its own Fail/InvalidArgument types
            raise BackendError(f"ONNX Runtime failed on a decode step: {exc}") from exc

    def _native_step(
        self, run: Callable[..., Any], tokens: list[int], offset: int, past: list[Any]
    ) -> tuple[np.ndarray, list[Any]]:
        # These tensors borrow the numpy arrays' memory, which only the wrappers keep alive:
        # they must outlive the run (unwrapped at once, the ids and mask were freed and
        # overwritten by the time the run read them: seen on the H200).
        wrapped = {
            name: onnxruntime.OrtValue.ortvalue_from_numpy(value)
            for name, value in self._layout.feeds(tokens, offset).items()
        }
        feeds = {name: value._ortvalue for name, value in wrapped.items()}
        for kv, value in zip(self._layout.kv, past, strict=True):
            feeds[kv.past] = value
        outputs = run(feeds, self._outputs, None)
        # Read by index: iterating the vector ends in a C++ exception, ~45 us a step.
        return outputs[0].numpy()[0, -1], [outputs[i] for i in range(1, len(outputs))]

    def _bound_step(
        self, tokens: list[int], offset: int, past: list[Any]
    ) -> tuple[np.ndarray, list[Any]]:
        layout, binding = self._layout, self._session.io_binding()
        feeds = layout.feeds(tokens, offset)  # held until the run is done, like the above
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        for kv, value in zip(layout.kv, past, strict=True):
            binding.bind_ortvalue_input(kv.past, value)
        binding.bind_output(layout.logits)
        for kv in layout.kv:
            binding.bind_output(kv.present, self._device)
        self._session.run_with_iobinding(binding)
        # The raw vector, wrapped here: get_outputs() adds ~35 us of checks to each step.
        # Read by index: iterating it ends in a C++ exception, ~45 us a step (py-spy).
        outputs = binding.get_outputs_as_ortvaluevector()
        presents = [onnxruntime.OrtValue(outputs[i]) for i in range(1, len(outputs))]
        return outputs[0].numpy()[0, -1], presents


def _spec(arg: Any) -> TensorSpec:
    return TensorSpec(arg.name, tuple(arg.shape), arg.type)


def _load_tokenizer(folder: Path) -> Any:
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise BackendError(f"{folder} has no tokenizer.json beside {MODEL_FILE}")
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise BackendError(
            f"reading tokenizer.json needs tokenizers: pip install tokenizers ({exc})"
        ) from exc
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on a bad file
        raise BackendError(f"cannot read {path}: {exc}") from exc


def _session(model: Path, threads: int, provider: str) -> Any:
    wanted = ORT_PROVIDERS[provider]
    available = onnxruntime.get_available_providers()
    if wanted[0] not in available:
        raise BackendError(
            f"this ONNX Runtime ({onnxruntime.__version__}) has no {wanted[0]}; "
            f"it has: {', '.join(available)}"
        )
    load_gpu_libraries(provider)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(str(model), options, providers=list(wanted))
    except Exception as exc:
        raise BackendError(f"ONNX Runtime could not load {model}: {exc}") from exc
    if session.get_providers()[0] != wanted[0]:  # ONNX Runtime falls back without a word
        raise BackendError(
            f"ONNX Runtime could not start {wanted[0]} for {model} "
            f"(it would run on {session.get_providers()[0]})"
        )
    return session


def load_gpu_libraries(provider: str) -> None:
    """Load CUDA and cuDNN from pip's nvidia-* packages, where they are installed.

    They are not on the dynamic loader's search path; onnxruntime-gpu (1.21 and later)
    finds and loads them with this call, documented for that case. It prints its
    warnings, so they go to stderr, not into a `--json` report on stdout."""
    preload = getattr(onnxruntime, "preload_dlls", None)
    if OUTPUT_DEVICES.get(provider) != "cuda" or preload is None:
        return
    with contextlib.redirect_stdout(sys.stderr):
        try:
            preload()
        except OSError as exc:  # the provider's own error will name what is missing
            log.warning("could not preload CUDA libraries: %s", exc)


def _declared_precision(folder: Path) -> str:
    """fp32 unless the folder says it was quantized (by us or by the genai builder)."""
    marker = folder / "edgebench-variant.txt"
    if marker.is_file():
        return marker.read_text().strip()
    model = folder / MODEL_FILE
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
        if item.is_file() and not item.name.startswith(MODEL_FILE):
            shutil.copy2(item, partial / item.name)
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the quantizer warns on the root logger about pre-processing
    try:
        quantize_dynamic(
            str(source / MODEL_FILE),
            str(partial / MODEL_FILE),
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
