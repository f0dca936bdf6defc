"""`edgebench jobs ...`: queue benchmark jobs and follow them."""

from __future__ import annotations

import getpass
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgebench.cli.client import CoordinatorClient
from edgebench.cli.common import (
    CaOption,
    JsonOption,
    TokenOption,
    UrlOption,
    client,
    err,
    out,
    parse_tags,
    print_json,
)
from edgebench.cli.options import workload_options
from edgebench.dashboard.models import DeviceSelector, JobCreate, JobPublic
from edgebench.engines import ENGINE_NAMES, check_matrix, detect_format
from edgebench.errors import EdgebenchError
from edgebench.protocol import NAME_RE
from edgebench.report import literal, summary_table
from edgebench.workload import Workload

app = typer.Typer(help="Queue benchmark jobs and follow them.", no_args_is_help=True)

FINAL_STATES = {"succeeded", "failed", "cancelled"}


def wait_for_job(api: CoordinatorClient, job_id: str, timeout: float | None = None) -> JobPublic:
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
        job_id = api.job(job_id).id  # a prefix becomes the whole id once
        while True:
            job = api.job(job_id)
            for run in job.runs:
                if run.id not in bars:
                    bars[run.id] = progress.add_task(f"run {run.id[:8]}", total=job.reps, detail="")
                where = run.device_name or "waiting for an agent"
                detail = f"{run.state} · {run.phase or '-'} · {where}"
                progress.update(bars[run.id], completed=run.rep, detail=detail)
            if job.state in FINAL_STATES:
                return job
            if deadline and time.monotonic() > deadline:
                raise EdgebenchError(f"job {job_id} did not finish within {timeout:.0f} s")
            time.sleep(0.3)


def print_job_results(api: CoordinatorClient, job: JobPublic) -> None:
    rows = api.result_rows(job_id=job.id)
    if rows:
        out.print(summary_table(rows, title=f"Job {job.id[:8]}"))
    for run in job.runs:
        if run.state != "succeeded":
            err.print(literal(f"run {run.id[:8]} {run.state}: {run.error or '-'}"))
    if job.state != "succeeded":
        raise typer.Exit(1)


# `bench` options that only make sense on the machine running the command.
LOCAL_ONLY = {
    "reference": "--reference runs llama-bench beside edgebench on this machine: use "
    "`edgebench bench --reference` on the device",
    "llama_bench": "--llama-bench names a program on this machine: use it with `edgebench "
    "bench --reference` on the device",
}


@app.command()
@workload_options
def submit(
    model: Annotated[
        list[Path],
        typer.Option(
            help="A GGUF file, an ONNX decoder folder (model.onnx, or onnxruntime-genai's) or a transformers folder; repeat for more. Uploaded unless the coordinator has it."
        ),
    ],
    workload: Workload,
    backend: Annotated[
        list[str] | None,
        typer.Option(
            help=f"Engine ({', '.join(ENGINE_NAMES)}); repeat for more.",
            show_default="by model format",
        ),
    ] = None,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            help="Variant to produce, e.g. Q4_K_M, int8, bf16; repeat for more.",
            show_default="as is",
        ),
    ] = None,
    device: Annotated[
        list[str] | None,
        typer.Option(help="Only this named device; repeat for more.", show_default="any device"),
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
    tier: Annotated[
        list[str] | None,
        typer.Option(
            help="Only devices of this trust tier (operator, contributor); repeat for both.",
            show_default="any tier",
        ),
    ] = None,
    hardware_class: Annotated[
        str | None,
        typer.Option(help="Only devices of this hardware class, as `devices show` names it."),
    ] = None,
    every: Annotated[
        bool,
        typer.Option(
            "--every",
            help="Run the whole matrix on every matching enrolled device, not on any one.",
        ),
    ] = False,
    priority: Annotated[int, typer.Option(min=-100, max=100, help="Higher runs go out first.")] = 0,
    submitter: Annotated[
        str | None,
        typer.Option(
            envvar="EDGEBENCH_SUBMITTER",
            show_envvar=True,
            help="Who asks; runs are shared fairly between submitters.",
            show_default="your user name",
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the job and print its results.")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option(help="With --wait: give up after this many seconds.")
    ] = None,
    reference: Annotated[bool, typer.Option("--reference", hidden=True)] = False,
    llama_bench: Annotated[str | None, typer.Option("--llama-bench", hidden=True)] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    ca: CaOption = None,
) -> None:
    """Queue a benchmark job (a matrix of models x backends x variants x sizes); prints
    only its id (then, with --wait, the result table). Takes the workload options of
    `edgebench bench`, with the same names."""
    for name, given in (("reference", reference), ("llama_bench", llama_bench)):
        if given:
            raise typer.BadParameter(LOCAL_ONLY[name])
    # Everything that can be refused is refused before any upload.
    formats = [detect_format(path) for path in model]
    check_matrix(backend or [], variant or [""], formats)
    try:
        selector = DeviceSelector.model_validate({
            "devices": device or [], "tags": parse_tags(tag), "arch": arch,
            "accelerator": accelerator, "min_memory_gb": min_memory, "tiers": tier or [],
            "hardware_class": hardware_class, "every": every,
        })  # fmt: skip
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from None
    who = submitter or user_name()
    if not NAME_RE.match(who):  # refused before any upload, not after
        raise typer.BadParameter(
            "1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
            param_hint="--submitter",
        )
    api = client(url, token, ca)
    shas = [_upload(api, path, fmt) for path, fmt in zip(model, formats, strict=True)]
    request = JobCreate(
        models=shas, backends=backend or [], variants=variant or [""], workload=workload,
        selector=selector, priority=priority, submitter=who,
    )  # fmt: skip
    job = api.submit_job(request)
    for warning in job.warnings:
        err.print(f"warning: {warning}", highlight=False)
    print(job.id, flush=True)
    if wait:
        print_job_results(api, wait_for_job(api, job.id, timeout))


def user_name() -> str:
    """Who submits, by default: the login name, made a valid submitter name."""
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

        return api.upload_model(path, fmt, advance).sha256


def _tests(spec: dict[str, Any]) -> str:
    """The job's matrix of sizes, llama-bench style: p64,256 n64 d512."""
    tests = spec["workload"]["tests"]
    parts = [
        f"{flag}{','.join(str(v) for v in tests.get(key) or [])}"
        for flag, key in (("p", "n_prompt"), ("n", "n_gen"), ("d", "n_depth"))
    ]
    return " ".join(part for part in parts if part not in ("d0", "d"))


def _models(job: JobPublic) -> str:
    return ", ".join(m.filename for m in job.models) or "-"


def _progress(job: JobPublic) -> str:
    done = sum(run.state == "succeeded" for run in job.runs)
    return f"{done}/{len(job.runs)}"


@app.command("list")
def list_jobs(
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    ca: CaOption = None,
) -> None:
    """The newest jobs first."""
    jobs = client(url, token, ca).jobs()
    if as_json:
        print_json([j.model_dump(mode="json") for j in jobs])
        return
    table = Table(title="Jobs")
    for header in ("Id", "State", "Done", "Model", "Backend", "Variant", "Tests", "Submitter",
                   "Created (UTC)"):  # fmt: skip
        table.add_column(header)
    for j in jobs:
        cells = (
            j.id[:8],
            j.state,
            _progress(j),
            _models(j),
            ", ".join(j.backends) or "-",
            ", ".join(v or "as is" for v in j.spec.get("variants") or [""]),
            _tests(j.spec),
            j.submitter,
            f"{j.created_at:%Y-%m-%d %H:%M:%S}",
        )
        table.add_row(*(literal(cell) for cell in cells))
    out.print(table)


@app.command()
def show(
    job_id: Annotated[str, typer.Argument(help="Job id, or a unique prefix of it.")],
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    ca: CaOption = None,
) -> None:
    """A job, its runs and its results."""
    api = client(url, token, ca)
    job = api.job(job_id)
    if as_json:
        print_json(job.model_dump(mode="json"))
        return
    reps = job.reps or "auto"
    out.print(
        literal(
            f"job {job.id} · {job.state} · {_progress(job)} runs done · {_models(job)} · "
            f"{_tests(job.spec)} x {reps} · by {job.submitter}"
        )
    )
    if job.waiting:
        out.print(literal(f"waiting: {job.waiting}"))
    table = Table(title="Runs")
    for header in ("Run", "State", "Backend", "Variant", "Test", "Device", "Attempts", "Error"):
        table.add_column(header)
    for run in job.runs:
        cells = (
            run.id[:8],
            run.state,
            run.backend,
            run.variant or "as is",
            f"pp{run.n_prompt}+tg{run.n_gen}" + (f" @ d{run.n_depth}" if run.n_depth else ""),
            run.device_name or "any device",
            str(run.attempts),
            run.error or "",
        )
        table.add_row(*(literal(cell) for cell in cells))
    out.print(table)
    rows = api.result_rows(job_id=job.id)
    if rows:
        out.print(summary_table(rows))


@app.command()
def watch(
    job_id: Annotated[str, typer.Argument(help="Job id, or a unique prefix of it.")],
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds.")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    ca: CaOption = None,
) -> None:
    """Follow a job until it finishes, then print its results."""
    api = client(url, token, ca)
    print_job_results(api, wait_for_job(api, job_id, timeout))


@app.command()
def retry(
    job_id: Annotated[str, typer.Argument(help="Job id, or a unique prefix of it.")],
    run: Annotated[str | None, typer.Option(help="Only this run (id or unique prefix).")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    ca: CaOption = None,
) -> None:
    """Queue a job's failed and dead runs again, with a fresh attempt count (after fixing
    what failed them: a device, an engine, a model)."""
    retried = client(url, token, ca).retry_job(job_id, run)
    count = retried.retried_runs
    what = f"queued {count} run{'s' * (count != 1)} again" if count else "had no failed runs"
    err.print(f"job {retried.job.id[:8]}: {what} (now {retried.job.state})", highlight=False)


@app.command()
def cancel(
    job_id: Annotated[str, typer.Argument(help="Job id, or a unique prefix of it.")],
    url: UrlOption = None,
    token: TokenOption = None,
    ca: CaOption = None,
) -> None:
    """Cancel the runs of a job that have not finished; a running run stops on its agent
    within a heartbeat. Finished runs keep their results."""
    cancelled = client(url, token, ca).cancel_job(job_id)
    job, count = cancelled.job, cancelled.cancelled_runs
    kept = sum(run.state == "succeeded" for run in job.runs)
    if count == 0:
        message = "had no unfinished runs; nothing was cancelled"
    else:
        message = f"cancelled {count} run{'s' * (count != 1)}"
        if kept:
            message += f"; {kept} finished run{'s' * (kept != 1)} keep their results"
    err.print(f"job {job.id[:8]}: {message} (now {job.state})", highlight=False)
