"""The one interface every inference engine implements.

A backend prepares a model variant (quantizes and caches it where it can), loads it,
turns text into its own tokens, and generates with one timestamp per token taken inside
its decode loop. It knows nothing about repetitions, statistics or the coordinator: the
runner does that (MLPerf LoadGen's split of system under test, workload and timing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from edgebench import engines
from edgebench.errors import EdgebenchError
from edgebench.measure.record import RepTiming
from edgebench.workload import EngineSettings

__all__ = ["Backend", "BackendError", "EngineSettings", "check_variant"]


class BackendError(EdgebenchError, RuntimeError):
    """A model the backend cannot prepare, load or run; the message is for the user."""


class WorkloadError(BackendError):
    """The run cannot be done as asked on any device: a variant the engine cannot make
    from this model, a test the context cannot hold, a model the engine cannot read. Its
    failure is final at once; any other is the device's (retried elsewhere)."""


class Backend(Protocol):
    name: str
    # Variants this backend can produce from a source model ('' = the source as it is).
    variants: tuple[str, ...]

    def engine_version(self) -> str: ...

    def build_info(self) -> dict[str, Any]:
        """How the engine was built and what it will use (system info, providers...)."""

    def prepare(self, source: Path, source_sha256: str, variant: str, cache: Path) -> Path:
        """The model file or folder of `variant`, made from `source` once and cached under
        `cache` (keyed by the source's sha256); BackendError if it cannot be made."""

    def load(self, model_path: Path, settings: EngineSettings) -> None: ...

    def tokenize(self, text: str) -> list[int]: ...

    def generate(self, context: list[int], prompt: list[int], n_gen: int) -> RepTiming:
        """From a clean state, feeds `context` (untimed: the prompt-depth setting), then
        prefills `prompt` and generates exactly `n_gen` tokens, EOS ignored. Returns the
        start time, the prefill duration and one timestamp per generated token."""

    def threads(self) -> int: ...

    def settings_in_force(self) -> dict[str, Any]:
        """Settings the engine chose itself where they may differ from the request (for
        example what llama.cpp's flash attention `auto` became); {} when none do."""

    def variant(self) -> str:
        """The loaded model's quantization or dtype, e.g. Q4_K_M, F16, int8, bf16."""

    def context_limit(self) -> int:
        """The most tokens (context + prompt + generated) one repetition may hold."""

    def close(self) -> None: ...


def check_variant(backend_name: str, variant: str) -> None:
    """A clear error, before any work, for a variant the backend cannot produce."""
    try:
        engines.check_variant(backend_name, variant)
    except engines.EngineError as exc:
        raise WorkloadError(str(exc)) from None
