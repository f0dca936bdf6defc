"""`edgebench bench MODEL`: local measurements, no coordinator (llama-bench style)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, Progress, TextColumn

from edgebench import paths
from edgebench.cli.common import (
    OutFileOption,
    OutputOption,
    check_output_format,
    err,
    write_output,
)
from edgebench.cli.options import workload_options
from edgebench.engines import ENGINE_NAMES, detect_format, engine_for_format
from edgebench.errors import EdgebenchError
from edgebench.report import render
from edgebench.workload import RunSpec, Workload


@workload_options
def bench(
    model: Annotated[
        Path,
        typer.Argument(
            help="A GGUF file, an ONNX decoder folder (model.onnx, or onnxruntime-genai's) or a transformers folder."
        ),
    ],
    workload: Workload,
    backend: Annotated[
        str,
        typer.Option(
            help=f"Engine: {', '.join(ENGINE_NAMES)}.",
            show_default="the one that runs the model's format",
        ),
    ] = "",
    variant: Annotated[
        str,
        typer.Option(
            help="Variant to produce and cache, e.g. Q4_K_M, int8, bf16.", show_default="as is"
        ),
    ] = "",
    reference: Annotated[
        bool,
        typer.Option(
            "--reference",
            help="Also run llama.cpp's llama-bench on the same file and print the ratios.",
        ),
    ] = False,
    llama_bench: Annotated[
        Path | None,
        typer.Option("--llama-bench", help="Path to llama-bench.", show_default="found on PATH"),
    ] = None,
    output: OutputOption = "md",
    out_file: OutFileOption = None,
) -> None:
    """Measure a model on this machine: one result per (depth, prompt, generation) test.
    json/jsonl add the raw per-token timestamps and the environment snapshot."""
    from edgebench.agent.runner import run_benchmark

    check_output_format(output)
    if not model.exists():
        raise EdgebenchError(f"model not found: {model}")
    try:
        spec = RunSpec(
            backend=backend or engine_for_format(detect_format(model)),
            variant=variant,
            workload=workload,
        )
    except ValidationError as exc:
        raise EdgebenchError(str(exc)) from None
    if reference:
        from edgebench.agent.reference import find_llama_bench

        tool = find_llama_bench(llama_bench)  # fails before any measuring
    planned = max(workload.repetitions.reps, 1)
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), console=err,
                  transient=True) as progress:  # fmt: skip
        task = progress.add_task("preparing", total=planned)

        def report(phase: str, done: int, total: int) -> None:
            progress.update(task, description=phase, completed=done, total=max(total, 1))

        results = run_benchmark(model, spec, cache_dir=paths.cache_dir() / "variants",
                                progress=report)  # fmt: skip
    raw = output in ("json", "jsonl")
    rows = [{"model": model.name, **r.fields(), **(r.to_dict() if raw else {})} for r in results]
    write_output(render(rows, output), out_file)
    if reference:
        from edgebench.agent.reference import compare_with_llama_bench

        compare_with_llama_bench(tool, model, spec, results, err)
