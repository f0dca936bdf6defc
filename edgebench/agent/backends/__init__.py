"""The registry of inference backends: one module each, imported only when used, so
that a device needs only the engines it runs."""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

from edgebench.agent.backends.base import Backend, BackendError

# backend name -> (module, class, distribution that provides the engine)
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "llama_cpp": ("edgebench.agent.backends.llama_cpp", "LlamaCppBackend", "llama-cpp-python"),
    "onnx": ("edgebench.agent.backends.onnx", "OnnxBackend", "onnxruntime"),
    "transformers": (
        "edgebench.agent.backends.transformers",
        "TransformersBackend",
        "transformers",
    ),
}
# The extra that installs each backend's engine.
EXTRAS = {"llama_cpp": "llama", "onnx": "onnx", "transformers": "hf"}
# The model artifact format each backend loads.
SOURCE_FORMATS = {"llama_cpp": "gguf", "onnx": "onnx", "transformers": "hf"}
# Variants each backend can produce ('' = the model as it is), known without importing it.
VARIANTS = {
    "llama_cpp": ("F32", "F16", "Q8_0", "Q5_K_M", "Q4_K_M", "Q4_0"),
    "onnx": ("fp32", "int8"),
    "transformers": ("fp32", "bf16", "fp16"),
}


def backend_for_format(source_format: str) -> str:
    """The backend that runs models of this format (each format has exactly one)."""
    return next(name for name, fmt in SOURCE_FORMATS.items() if fmt == source_format)


def backend_names() -> list[str]:
    return sorted(_REGISTRY)


def create_backend(name: str) -> Backend:
    if name not in _REGISTRY:
        raise BackendError(f"unknown backend {name!r}; known: {', '.join(backend_names())}")
    module_name, class_name, dist = _REGISTRY[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(
            f"backend {name!r} needs {dist}: pip install 'edgebench[{EXTRAS[name]}]' ({exc})"
        ) from exc
    backend: Backend = getattr(module, class_name)()
    return backend


def installed_engines() -> dict[str, str]:
    """Engine name -> installed version, for the hardware snapshot."""
    engines = {}
    for name, (_, _, dist) in _REGISTRY.items():
        try:
            engines[name] = version(dist)
        except PackageNotFoundError:
            continue
    return engines


__all__ = [
    "Backend",
    "BackendError",
    "backend_for_format",
    "backend_names",
    "create_backend",
    "installed_engines",
]
