"""`edgebench bench MODEL`: one local measurement, no coordinator (llama-bench style)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn

from edgebench.cli.common import err
from edgebench.report import FORMATS, render


def bench(
    model: Annotated[Path, typer.Argument(help="Path to a GGUF model file.")],
    n_prompt: Annotated[
        int, typer.Option("--n-prompt", "-p", min=1, help="Prompt length in tokens.")
    ] = 64,
    n_gen: Annotated[
        int,
        typer.Option("--n-gen", "-n", min=2, help="Tokens generated per repetition (EOS ignored)."),
    ] = 64,
    reps: Annotated[int, typer.Option("--reps", "-r", min=1, help="Measured repetitions.")] = 5,
    warmup: Annotated[int, typer.Option(min=0, help="Warm-up repetitions (discarded).")] = 1,
    threads: Annotated[
        int, typer.Option("--threads", "-t", min=0, help="CPU threads (0 = physical cores).")
    ] = 0,
    backend: Annotated[str, typer.Option(help="Inference engine.")] = "llama_cpp",
    output: Annotated[
        str, typer.Option("--output", "-o", help=f"Output format: {', '.join(FORMATS)}.")
    ] = "md",
) -> None:
    """Measure a model on this machine and print the result (json/jsonl add raw token timings)."""
    from edgebench.agent.backends.base import BackendError
    from edgebench.agent.runner import BenchSpec, run_benchmark

    if output not in FORMATS:
        raise typer.BadParameter(f"choose one of {', '.join(FORMATS)}", param_hint="--output")
    if not model.is_file():
        raise BackendError(f"model file not found: {model}")
    spec = BenchSpec(
        backend=backend, n_prompt=n_prompt, n_gen=n_gen, reps=reps, warmup=warmup, threads=threads
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("loading", total=reps)

        def report(phase: str, done: int, total: int) -> None:
            progress.update(task, description=phase, completed=done, total=total)

        result = run_benchmark(model, spec, progress=report)
    raw = output in ("json", "jsonl")
    row = result.to_dict() if raw else result.fields()
    if raw:  # the stable fields first, then provenance and raw timings
        row = {**result.fields(), **row}
    sys.stdout.write(render([row], output))
