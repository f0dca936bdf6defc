"""The engine catalog: which inference engines edgebench drives, the model format each one
loads, the variants each can make, and how a model file's format is recognised. Neutral
ground: the agent, the coordinator and the CLI import it; it imports no engine."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from edgebench.errors import EdgebenchError

GGUF_MAGIC = b"GGUF"


class ModelFormat(str, Enum):
    GGUF = "gguf"  # one file
    ONNX = "onnx"  # a folder: onnxruntime-genai's, or any with model.onnx
    HF = "hf"  # a transformers folder


MODEL_FORMATS: tuple[str, ...] = tuple(f.value for f in ModelFormat)


class EngineError(EdgebenchError, ValueError):
    """A request no engine can serve: the message says what can."""


@dataclass(frozen=True)
class Engine:
    name: str
    model_format: ModelFormat
    variants: tuple[str, ...]  # what it can make from a model ('' = the model as it is)
    extra: str  # the pip extra that installs it
    distribution: str  # the package whose version is the engine's version
    implementation: str  # "module:Class" of the agent's backend, imported only to run it


ENGINES: dict[str, Engine] = {
    engine.name: engine
    for engine in (
        Engine(
            "llama_cpp",
            ModelFormat.GGUF,
            ("F32", "F16", "Q8_0", "Q5_K_M", "Q4_K_M", "Q4_0"),
            "llama",
            "llama-cpp-python",
            "edgebench.agent.backends.llama_cpp:LlamaCppBackend",
        ),
        Engine(
            "onnx",
            ModelFormat.ONNX,
            ("fp32", "int8"),
            "onnx",
            "onnxruntime",
            "edgebench.agent.backends.onnx:OnnxBackend",
        ),
        Engine(
            "transformers",
            ModelFormat.HF,
            ("fp32", "bf16", "fp16"),
            "hf",
            "transformers",
            "edgebench.agent.backends.transformers:TransformersBackend",
        ),
    )
}
ENGINE_NAMES: tuple[str, ...] = tuple(sorted(ENGINES))


def engine(name: str) -> Engine:
    if name not in ENGINES:
        raise EngineError(f"unknown backend {name!r}; known: {', '.join(ENGINE_NAMES)}")
    return ENGINES[name]


def engine_for_format(model_format: str) -> str:
    """The engine that runs models of this format (each format has exactly one)."""
    return next(e.name for e in ENGINES.values() if e.model_format.value == model_format)


def check_variant(engine_name: str, variant: str) -> None:
    """A clear error, before any work, for a variant the engine cannot make. The empty
    variant means the source model as it is."""
    variants = engine(engine_name).variants
    if variant and variant not in variants:
        raise EngineError(
            f"backend {engine_name} cannot produce variant {variant!r}; "
            f"it can produce: {', '.join(variants)} (or '' for the model as it is)"
        )


def check_matrix(
    backends: Iterable[str], variants: Iterable[str], formats: Iterable[str]
) -> list[str]:
    """The engines a job of models in `formats` runs on: the named ones, else the ones
    that load those formats. Refuses an unknown engine, a variant none of them can make,
    an engine given no model it loads, and a model no chosen engine loads."""
    given = set(formats)
    chosen = list(backends) or sorted(
        e.name for e in ENGINES.values() if e.model_format.value in given
    )
    for name in chosen:
        engine(name)
    for variant in variants:
        if variant and not any(variant in ENGINES[b].variants for b in chosen):
            raise EngineError(
                f"variant {variant!r} cannot be made by {', '.join(chosen)}; "
                + "; ".join(f"{b}: {', '.join(ENGINES[b].variants)}" for b in chosen)
            )
    for name in chosen:
        if ENGINES[name].model_format.value not in given:
            raise EngineError(f"backend {name} needs a {ENGINES[name].model_format.value} model")
    loaded = {ENGINES[name].model_format.value for name in chosen}
    for fmt in sorted(given - loaded):
        raise EngineError(f"no chosen backend can run models of format {fmt}")
    return chosen


def detect_format(path: Path) -> str:
    """gguf for a GGUF file, onnx for an ONNX decoder folder (onnxruntime-genai's, or any
    folder with model.onnx), hf for a transformers folder; a clear error for anything else."""
    if path.is_file():
        with path.open("rb") as handle:
            if handle.read(4) == GGUF_MAGIC:
                return ModelFormat.GGUF.value
        raise EngineError(f"not a GGUF model file: {path}")
    if path.is_dir():
        return folder_format({p.name for p in path.iterdir() if p.is_file()}, path)
    raise EngineError(f"model file not found: {path}")


def folder_format(names: set[str], where: object) -> str:
    """The format of a model folder from the names of its files."""
    # An ONNX export keeps the transformers config.json beside model.onnx: ONNX first.
    if "genai_config.json" in names or "model.onnx" in names:
        return ModelFormat.ONNX.value
    if "config.json" in names:
        return ModelFormat.HF.value
    raise EngineError(
        f"{where} is neither an ONNX model folder (model.onnx or genai_config.json) "
        "nor a transformers folder (config.json)"
    )
