"""The one interface every inference engine implements.

A backend loads a model, turns text into its own tokens, and generates with one
timestamp per token taken inside its decode loop. It knows nothing about repetitions,
statistics or the coordinator: the runner does that (MLPerf LoadGen's split).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edgebench.errors import EdgebenchError
from edgebench.measure.record import RepTiming


class BackendError(EdgebenchError, RuntimeError):
    """A model the backend cannot load or run; the message is meant for the user."""


@dataclass(frozen=True)
class EngineSettings:
    threads: int  # 0: the backend picks (physical cores)
    n_ctx: int
    n_batch: int = 512


class Backend(Protocol):
    name: str

    def engine_version(self) -> str: ...

    def load(self, model_path: Path, settings: EngineSettings) -> None: ...

    def tokenize(self, text: str) -> list[int]: ...

    def generate(self, prompt: list[int], n_gen: int) -> RepTiming:
        """Prefills `prompt` and generates exactly `n_gen` tokens (EOS ignored) from a
        clean context; returns the prefill duration and one timestamp per token."""
        ...

    def threads(self) -> int: ...

    def variant(self) -> str:
        """The loaded model's quantization or dtype, e.g. Q4_K_M, F16."""
        ...

    def close(self) -> None: ...
