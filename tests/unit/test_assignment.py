"""Every workload field travels whole: CLI options -> JobCreate -> a run -> protobuf bytes
-> the agent's run spec. The values are generated from the models, so a new field is
covered without editing this test (and fails it until the CLI and the wire carry it)."""

from __future__ import annotations

import typing
from enum import Enum
from typing import Any

import typer
from pydantic.fields import FieldInfo
from typer.testing import CliRunner

from edgebench.agent.wire import spec_from
from edgebench.cli.main import app as main_app
from edgebench.cli.options import FLAGS, workload_options
from edgebench.coordinator.jobspec import plan_runs
from edgebench.coordinator.store import Claim
from edgebench.coordinator.tables import Artifact, Job, Run
from edgebench.coordinator.wire import assignment_for
from edgebench.dashboard.models import JobCreate
from edgebench.proto.v1 import agent_pb2 as pb
from edgebench.workload import FIELD_SECTIONS, SECTIONS, Workload

SHA = "d" * 64
# A valid value for a text field with a pattern (bounds give every number its value).
TEXT_VALUES = {"provider": "tensorrt"}


def _bounds(info: FieldInfo) -> tuple[float, float]:
    low, high = 0.0, 100.0
    for item in info.metadata:
        for name in ("ge", "gt"):
            if getattr(item, name, None) is not None:
                low = float(getattr(item, name))
        for name in ("le", "lt"):
            if getattr(item, name, None) is not None:
                high = float(getattr(item, name))
    return low, high


def _value(name: str, info: FieldInfo) -> Any:
    """A valid value that is not the field's default."""
    default = info.get_default(call_default_factory=True)
    if typing.get_origin(info.annotation) is list:
        return [default[0] + 1]
    kinds = [a for a in typing.get_args(info.annotation) if a is not type(None)]
    kind: Any = kinds[0] if kinds else info.annotation
    if isinstance(kind, type) and issubclass(kind, Enum):
        return next(member for member in kind if member != default)
    if kind is bool:
        return not default if default is not None else True
    if kind is str:
        return TEXT_VALUES[name]
    low, high = _bounds(info)
    middle = (low + high) / 2
    return int(middle) if kind is int else middle


EXPECTED = {
    name: _value(name, SECTIONS[section].model_fields[name])
    for name, section in FIELD_SECTIONS.items()
}


def _argv(values: dict[str, Any]) -> list[str]:
    argv = []
    for name, value in values.items():
        flag = FLAGS[name].names[0]
        if flag.startswith("--repack/"):
            argv.append("--repack" if value else "--no-repack")
            continue
        if isinstance(value, list):
            text = ",".join(str(v) for v in value)
        elif isinstance(value, Enum):
            text = str(value.value)
        elif flag == "--cooldown-to":
            text = f"{value}C"
        elif FLAGS[name].metavar == "DURATION":
            text = f"{value}s"
        else:
            text = str(value)
        argv += [flag, text]
    return argv


def _from_cli(argv: list[str]) -> Workload:
    seen: list[Workload] = []

    def command(workload: Workload) -> None:
        seen.append(workload)

    app = typer.Typer()
    app.command()(workload_options(command))
    done = CliRunner().invoke(app, argv)
    assert done.exit_code == 0, done.output
    return seen[0]


def test_every_field_goes_from_the_cli_to_the_agent() -> None:
    workload = _from_cli(_argv(EXPECTED))
    assert workload.flat() == EXPECTED  # every option set its field
    job = JobCreate(models=[SHA], variants=["Q4_K_M"], workload=workload)
    [planned] = plan_runs(job, {SHA: "gguf"})
    run = Run(job_id="j", lease_epoch=4, **planned.__dict__)
    claim = Claim(run=run, job=Job(id="j", spec_json=job.model_dump_json()))
    artifact = Artifact(sha256=SHA, filename="m.gguf", size_bytes=9, format="gguf")
    sent = assignment_for(claim, artifact, job, lease_seconds=30).SerializeToString()
    spec = spec_from(pb.RunAssignment.FromString(sent))
    assert (spec.backend, spec.variant) == ("llama_cpp", "Q4_K_M")
    assert spec.workload.flat() == EXPECTED


def test_unset_options_are_the_models_defaults() -> None:
    assert _from_cli([]) == Workload()


def test_bench_and_jobs_submit_take_the_same_workload_options() -> None:
    command = typer.main.get_command(main_app)
    context = typer.Context(command)
    bench = command.get_command(context, "bench")  # type: ignore[attr-defined]
    jobs = command.get_command(context, "jobs")  # type: ignore[attr-defined]
    submit = jobs.get_command(context, "submit")
    for cli in (bench, submit):
        names = {opt for param in cli.params for opt in (*param.opts, *param.secondary_opts)}
        for flag in FLAGS.values():
            for spelled in flag.names[0].split("/"):
                assert spelled in names, (cli.name, spelled)


def test_submit_refuses_what_only_makes_sense_locally(tmp_path: Any) -> None:
    done = CliRunner().invoke(main_app, ["jobs", "submit", "--model", "x.gguf", "--reference"])
    assert done.exit_code != 0 and "llama-bench beside edgebench" in done.output
