"""`edgebench jobs ...`: queue benchmark jobs and follow them."""

from __future__ import annotations

import getpass
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgebench.agent.backends import backend_names
from edgebench.cli.bench import int_list, parse_celsius, parse_reps, parse_seconds
from edgebench.cli.client import CoordinatorClient
from edgebench.cli.common import (
    BatchSizeOption,
    CtxSizeOption,
    FlashAttnOption,
    GpuLayersOption,
    JsonOption,
    TokenOption,
    UBatchSizeOption,
    UrlOption,
    client,
    err,
    out,
    parse_tags,
    print_json,
)
from edgebench.cli.results import result_rows
from edgebench.errors import EdgebenchError
from edgebench.modelfiles import detect_format
from edgebench.report import summary_table

app = typer.Typer(help="Queue benchmark jobs and follow them.", no_args_is_help=True)

FINAL_STATES = {"succeeded", "failed", "cancelled"}


def wait_for_job(
    api: CoordinatorClient, job_id: str, timeout: float | None = None
) -> dict[str, Any]:
    """Follows a job with a progress bar on stderr until every run is final."""
    deadline = time.monotonic() + timeout if timeout else None
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        bars: dict[str, Any] = {}
        while True:
            job = api.job(job_id)
            for run in job["runs"]:
                if run["id"] not in bars:
                    bars[run["id"]] = progress.add_task(
                        f"run {run['id'][:8]}", total=job["reps"], detail=""
                    )
                where = run["device_name"] or "waiting for an agent"
                detail = f"{run['state']} · {run['phase'] or '-'} · {where}"
                progress.update(bars[run["id"]], completed=run["rep"], detail=detail)
            if job["state"] in FINAL_STATES:
                return job
            if deadline and time.monotonic() > deadline:
                raise EdgebenchError(f"job {job_id} did not finish within {timeout:.0f} s")
            time.sleep(0.3)


def print_job_results(api: CoordinatorClient, job: dict[str, Any]) -> None:
    rows = result_rows(api.results(job_id=job["id"]), timings=False)
    if rows:
        out.print(summary_table(rows, title=f"Job {job['id'][:8]}"))
    for run in job["runs"]:
        if run["state"] != "succeeded":
            err.print(f"run {run['id'][:8]} {run['state']}: {run['error'] or '-'}")
    if job["state"] != "succeeded":
        raise typer.Exit(1)


@app.command()
def submit(
    model: Annotated[
        list[Path],
        typer.Option(
            help="A GGUF file, an ONNX decoder folder (model.onnx, or onnxruntime-genai's) or a transformers folder; repeat for more. Uploaded unless the coordinator has it."
        ),
    ],
    backend: Annotated[
        list[str] | None,
        typer.Option(
            help=f"Engine ({', '.join(backend_names())}); repeat for more [default: by model format]."
        ),
    ] = None,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            help="Variant to produce, e.g. Q4_K_M, int8, bf16; repeat for more [default: as is]."
        ),
    ] = None,
    prompt_tokens: Annotated[
        str, typer.Option("--prompt-tokens", "-p", help="Prompt lengths, e.g. 64,256.")
    ] = "64",
    gen_tokens: Annotated[
        str, typer.Option("--gen-tokens", "-n", help="Generated tokens per rep, e.g. 64,128.")
    ] = "64",
    depth: Annotated[
        str, typer.Option("--n-depth", "-d", help="Context already in the cache, e.g. 0,512.")
    ] = "0",
    reps: Annotated[str, typer.Option("--reps", "-r", help="Repetitions, or 'auto'.")] = "5",
    warmup: Annotated[int, typer.Option(min=0, help="Warm-up repetitions (discarded).")] = 1,
    threads: Annotated[int, typer.Option(min=0, help="CPU threads (0 = physical cores).")] = 0,
    sustained: Annotated[
        str | None, typer.Option(help="Sustained mode for this long, e.g. 300s.")
    ] = None,
    cooldown_to: Annotated[
        str | None,
        typer.Option(help="Wait until the device is below this temperature first, e.g. 50C."),
    ] = None,
    ctx_size: CtxSizeOption = 0,
    batch_size: BatchSizeOption = 512,
    ubatch_size: UBatchSizeOption = 512,
    n_gpu_layers: GpuLayersOption = 0,
    flash_attn: FlashAttnOption = False,
    provider: Annotated[
        str,
        typer.Option(
            help="ONNX Runtime provider (cpu, cuda, tensorrt); transformers: cpu or cuda."
        ),
    ] = "cpu",
    device: Annotated[
        list[str] | None,
        typer.Option(help="Only this named device; repeat for more [default: any device]."),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option(help="Only devices enrolled with this key=value tag; repeat: all must hold."),
    ] = None,
    arch: Annotated[
        str | None, typer.Option(help="Only this CPU architecture (x86_64, aarch64...).")
    ] = None,
    accelerator: Annotated[
        str | None, typer.Option(help="Only devices with this accelerator (cuda, none).")
    ] = None,
    min_memory: Annotated[
        float | None, typer.Option(help="Only devices with at least this much RAM, in GiB.")
    ] = None,
    every: Annotated[
        bool,
        typer.Option(
            "--every",
            help="Run the whole matrix on every matching enrolled device [default: any one].",
        ),
    ] = False,
    priority: Annotated[int, typer.Option(min=-100, max=100, help="Higher runs go out first.")] = 0,
    submitter: Annotated[
        str | None,
        typer.Option(
            envvar="EDGEBENCH_SUBMITTER",
            help="Who asks; runs are shared fairly between submitters [default: your user name].",
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the job and print its results.")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option(help="With --wait: give up after this many seconds.")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Queue a benchmark job (a matrix of models x backends x variants x sizes); prints
    only its id (then, with --wait, the result table)."""
    formats = [detect_format(path) for path in model]  # refuse bad paths before any upload
    api = client(url, token)
    shas = [_upload(api, path, fmt) for path, fmt in zip(model, formats, strict=True)]
    body: dict[str, Any] = {
        "models": shas,
        "backends": backend or [],
        "variants": variant or [""],
        "n_prompt": list(int_list(prompt_tokens, "prompt lengths", 1)),
        "n_gen": list(int_list(gen_tokens, "generation lengths", 2)),
        "n_depth": list(int_list(depth, "depths", 0)),
        "reps": parse_reps(reps),
        "warmup": warmup,
        "threads": threads,
        "sustained_seconds": parse_seconds(sustained) if sustained else 0.0,
        "cooldown_c": parse_celsius(cooldown_to) if cooldown_to else None,
        "n_ctx": ctx_size,
        "n_batch": batch_size,
        "n_ubatch": ubatch_size,
        "n_gpu_layers": n_gpu_layers,
        "flash_attn": flash_attn,
        "provider": provider,
        "selector": {
            "devices": device or [],
            "tags": parse_tags(tag),
            "arch": arch,
            "accelerator": accelerator,
            "min_memory_gb": min_memory,
            "every": every,
        },
        "priority": priority,
        "submitter": submitter or _user_name(),
    }
    job = api.submit_job(body)
    print(job["id"], flush=True)
    if wait:
        print_job_results(api, wait_for_job(api, job["id"], timeout))


def _user_name() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        return "default"
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in name)[:63]
    return cleaned if cleaned[:1].isalnum() else "default"


def _upload(api: CoordinatorClient, path: Path, fmt: str) -> str:
    with Progress(TextColumn("uploading {task.description}"), BarColumn(), console=err,
                  transient=True) as progress:  # fmt: skip
        task = progress.add_task(path.name, total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        return str(api.upload_model(path, fmt, advance)["sha256"])


@app.command("list")
def list_jobs(
    as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None
) -> None:
    """The newest jobs first."""
    jobs = client(url, token).jobs()
    if as_json:
        print_json(jobs)
        return
    table = Table(title="Jobs")
    for header in ("Id", "State", "Model", "Backend", "Prompt", "Gen", "Reps", "Created (UTC)"):
        table.add_column(header)
    for j in jobs:
        table.add_row(
            j["id"],
            j["state"],
            j["model_filename"],
            j["backend"],
            str(j["n_prompt"]),
            str(j["n_gen"]),
            str(j["reps"]),
            j["created_at"][:19],
        )
    out.print(table)


@app.command()
def show(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """A job, its runs and its results."""
    api = client(url, token)
    job = api.job(job_id)
    if as_json:
        print_json(job)
        return
    out.print(
        f"job {job['id']} · {job['state']} · {job['model_filename']} · {job['backend']} · "
        f"p{job['n_prompt']} n{job['n_gen']} x {job['reps']}",
        highlight=False,
    )
    for run in job["runs"]:
        out.print(
            f"  run {run['id']} {run['state']} on {run['device_name'] or 'any device'}"
            f" (attempt {run['attempts']}) {run['error']}",
            highlight=False,
        )
    rows = result_rows(api.results(job_id=job_id), timings=False)
    if rows:
        out.print(summary_table(rows))


@app.command()
def watch(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds.")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Follow a job until it finishes, then print its results."""
    api = client(url, token)
    print_job_results(api, wait_for_job(api, job_id, timeout))


@app.command()
def cancel(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Cancel a job; a running run stops on its agent within a heartbeat."""
    job = client(url, token).cancel_job(job_id)
    err.print(f"job {job['id']} is {job['state']}")
