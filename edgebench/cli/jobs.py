"""`edgebench jobs ...`: queue benchmark jobs and follow them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgebench.cli.client import CoordinatorClient
from edgebench.cli.common import JsonOption, TokenOption, UrlOption, client, err, out, print_json
from edgebench.cli.results import result_rows
from edgebench.errors import EdgebenchError
from edgebench.report import summary_table

app = typer.Typer(help="Queue benchmark jobs and follow them.", no_args_is_help=True)

FINAL_STATES = {"succeeded", "failed", "cancelled"}


def check_model_file(path: Path) -> None:
    if not path.is_file():
        raise EdgebenchError(f"model file not found: {path}")
    with path.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise EdgebenchError(f"not a GGUF model file: {path}")


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
        Path, typer.Option(help="Path to a GGUF model; uploaded unless the coordinator has it.")
    ],
    prompt_tokens: Annotated[
        int, typer.Option("--prompt-tokens", "-p", min=1, help="Prompt length in tokens.")
    ] = 64,
    gen_tokens: Annotated[
        int, typer.Option("--gen-tokens", "-n", min=2, help="Tokens generated per repetition.")
    ] = 64,
    reps: Annotated[int, typer.Option("--reps", "-r", min=1, help="Measured repetitions.")] = 5,
    warmup: Annotated[int, typer.Option(min=0, help="Warm-up repetitions (discarded).")] = 1,
    threads: Annotated[int, typer.Option(min=0, help="CPU threads (0 = physical cores).")] = 0,
    backend: Annotated[str, typer.Option(help="Inference engine.")] = "llama_cpp",
    device: Annotated[
        str | None, typer.Option(help="Run on this device only [default: any one].")
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
    """Queue a benchmark job; prints only its id (then, with --wait, the result table)."""
    check_model_file(model)
    api = client(url, token)
    with Progress(
        TextColumn("uploading {task.description}"), BarColumn(), console=err, transient=True
    ) as progress:
        task = progress.add_task(model.name, total=model.stat().st_size)
        artifact = api.upload_model(
            model, lambda done, _total: progress.update(task, completed=done)
        )
    body = {
        "model_sha256": artifact["sha256"],
        "backend": backend,
        "n_prompt": prompt_tokens,
        "n_gen": gen_tokens,
        "reps": reps,
        "warmup": warmup,
        "threads": threads,
        "device": device,
    }
    job = api.submit_job(body)
    print(job["id"], flush=True)
    if wait:
        print_job_results(api, wait_for_job(api, job["id"], timeout))


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
