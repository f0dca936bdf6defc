"""`edgebench bench MODEL`: local measurements, no coordinator (llama-bench style)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn

from edgebench import paths
from edgebench.agent.backends import backend_for_format, backend_names
from edgebench.agent.backends.base import EngineSettings
from edgebench.cli.common import (
    BatchSizeOption,
    CtxSizeOption,
    FlashAttnOption,
    GpuLayersOption,
    UBatchSizeOption,
    err,
)
from edgebench.errors import EdgebenchError
from edgebench.modelfiles import detect_format
from edgebench.report import FORMATS, render


def int_list(text: str, what: str, minimum: int) -> tuple[int, ...]:
    """'64,256' -> (64, 256), llama-bench style."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"{what} must be integers separated by commas") from None
    if not values or min(values) < minimum:
        raise typer.BadParameter(f"{what} must be at least {minimum}")
    return values


def parse_reps(text: str) -> int:
    """A count, or 'auto' (0): repeat until the decode ci95 is within +-2% of the mean."""
    if text == "auto":
        return 0
    if not text.isdigit() or int(text) < 1:
        raise typer.BadParameter("repetitions must be a positive count or 'auto'")
    return int(text)


def parse_seconds(text: str) -> float:
    """'300s', '5m' or plain seconds."""
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}
    try:
        if text and text[-1] in scale:
            return float(text[:-1]) * scale[text[-1]]
        return float(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a duration like 30s or 5m") from None


def parse_celsius(text: str) -> float:
    """'50C', '50' -> 50.0."""
    try:
        return float(text.strip().upper().removesuffix("C"))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a temperature like 50C") from None


def bench(
    model: Annotated[
        Path,
        typer.Argument(
            help="A GGUF file, an ONNX decoder folder (model.onnx, or onnxruntime-genai's) or a transformers folder."
        ),
    ],
    n_prompt: Annotated[
        str, typer.Option("--n-prompt", "-p", help="Prompt lengths in tokens, e.g. 64,256.")
    ] = "64",
    n_gen: Annotated[
        str,
        typer.Option("--n-gen", "-n", help="Generated tokens per rep (EOS ignored), e.g. 64,128."),
    ] = "64",
    n_depth: Annotated[
        str, typer.Option("--n-depth", "-d", help="Context already in the cache before the prompt.")
    ] = "0",
    reps: Annotated[
        str,
        typer.Option(
            "--reps", "-r", help="Repetitions, or 'auto' (until the decode ci95 is within 2%)."
        ),
    ] = "5",
    max_reps: Annotated[
        int, typer.Option(min=2, help="With --reps auto: the most repetitions.")
    ] = 30,
    max_time: Annotated[
        str, typer.Option(help="With --reps auto: the longest time per test.")
    ] = "300s",
    warmup: Annotated[int, typer.Option(min=0, help="Warm-up repetitions (discarded).")] = 1,
    backend: Annotated[
        str,
        typer.Option(
            help=f"Engine: {', '.join(backend_names())} [default: the one that runs the "
            "model's format]."
        ),
    ] = "",
    variant: Annotated[
        str,
        typer.Option(
            help="Variant to produce and cache, e.g. Q4_K_M, int8, bf16 [default: as is]."
        ),
    ] = "",
    threads: Annotated[
        int, typer.Option("--threads", "-t", min=0, help="CPU threads (0 = physical cores).")
    ] = 0,
    ctx_size: CtxSizeOption = 0,
    batch_size: BatchSizeOption = 512,
    ubatch_size: UBatchSizeOption = 512,
    n_gpu_layers: GpuLayersOption = 0,
    flash_attn: FlashAttnOption = False,
    repack: Annotated[
        bool | None,
        typer.Option(
            "--repack/--no-repack",
            help="llama.cpp weight repacking [default: on, off on AMX CPUs].",
        ),
    ] = None,
    provider: Annotated[
        str,
        typer.Option(
            help="ONNX Runtime execution provider: cpu, cuda, tensorrt; transformers: cpu or cuda."
        ),
    ] = "cpu",
    sustained: Annotated[
        str | None,
        typer.Option(help="Generate back to back for this long, e.g. 300s, and report stability."),
    ] = None,
    window: Annotated[str, typer.Option(help="Sustained mode: window length.")] = "5s",
    noisy_pct: Annotated[
        float,
        typer.Option(
            min=0, max=100, help="Flag a run noisy above this share of CPU used by others."
        ),
    ] = 10.0,
    idle_seconds: Annotated[
        float,
        typer.Option(min=0, help="Idle baseline before each test (only where power is measured)."),
    ] = 2.0,
    sample_hz: Annotated[
        float, typer.Option(min=0.1, max=100, help="Sensor sampling rate.")
    ] = 10.0,
    cooldown_to: Annotated[
        str | None,
        typer.Option(help="First wait until the hottest sensor is below this, e.g. 50C."),
    ] = None,
    cooldown_max: Annotated[str, typer.Option(help="The longest cool-down wait.")] = "300s",
    reference: Annotated[
        bool,
        typer.Option(
            "--reference",
            help="Also run llama.cpp's llama-bench on the same file and print the ratios.",
        ),
    ] = False,
    llama_bench: Annotated[
        Path | None,
        typer.Option("--llama-bench", help="Path to llama-bench [default: found on PATH]."),
    ] = None,
    output: Annotated[
        str, typer.Option("--output", "-o", help=f"Output format: {', '.join(FORMATS)}.")
    ] = "md",
) -> None:
    """Measure a model on this machine: one result per (depth, prompt, generation) test.
    json/jsonl add the raw per-token timestamps and the environment snapshot."""
    from edgebench.agent.runner import BenchSpec, run_benchmark

    if output not in FORMATS:
        raise typer.BadParameter(f"choose one of {', '.join(FORMATS)}", param_hint="--output")
    if not model.exists():
        raise EdgebenchError(f"model not found: {model}")
    spec = BenchSpec(
        backend=backend or backend_for_format(detect_format(model)),
        variant=variant,
        n_prompt=int_list(n_prompt, "prompt lengths", 1),
        n_gen=int_list(n_gen, "generation lengths", 2),
        n_depth=int_list(n_depth, "depths", 0),
        reps=parse_reps(reps),
        max_reps=max_reps,
        max_seconds=parse_seconds(max_time),
        warmup=warmup,
        sustained_seconds=parse_seconds(sustained) if sustained else 0.0,
        window_seconds=parse_seconds(window),
        noisy_pct=noisy_pct,
        idle_seconds=idle_seconds,
        sample_hz=sample_hz,
        cooldown_c=parse_celsius(cooldown_to) if cooldown_to else None,
        cooldown_max_seconds=parse_seconds(cooldown_max),
        settings=EngineSettings(
            threads=threads,
            n_ctx=ctx_size,
            n_batch=batch_size,
            n_ubatch=ubatch_size,
            n_gpu_layers=n_gpu_layers,
            flash_attn=flash_attn,
            repack=repack,
            provider=provider,
        ),
    )
    try:
        spec.validate()
    except ValueError as exc:
        raise EdgebenchError(str(exc)) from None
    if reference:
        from edgebench.agent.reference import find_llama_bench

        tool = find_llama_bench(llama_bench)  # fails before any measuring
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), console=err,
                  transient=True) as progress:  # fmt: skip
        task = progress.add_task("preparing", total=max(spec.reps, 1))

        def report(phase: str, done: int, total: int) -> None:
            progress.update(task, description=phase, completed=done, total=max(total, 1))

        results = run_benchmark(model, spec, cache_dir=paths.cache_dir() / "variants",
                                progress=report)  # fmt: skip
    raw = output in ("json", "jsonl")
    rows = [{**r.fields(), **r.to_dict()} if raw else r.fields() for r in results]
    sys.stdout.write(render(rows, output))
    if reference:
        from edgebench.agent.reference import compare_with_llama_bench

        compare_with_llama_bench(tool, model, spec, results, err)
