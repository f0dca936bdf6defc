"""The workload options of `bench` and `jobs submit`, declared once.

Each option is a field of edgebench.workload: its help text, default and bounds come from
the model. This module adds only what is the CLI's own: the flag names (llama-bench's
where it has one), how text is read (64,256 lists, 30s durations, 50C temperatures) and
hidden aliases kept for one release. `workload_options` adds every option to a command
and hands it the checked `Workload`."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from edgebench.workload import FIELD_SECTIONS, SECTIONS, Workload

F = TypeVar("F", bound=Callable[..., Any])


def parse_sizes(text: str) -> list[int]:
    """'64,256' -> [64, 256], llama-bench style."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter("must be integers separated by commas") from None
    if not values:
        raise typer.BadParameter("needs at least one value")
    return values


def parse_reps(text: str) -> int:
    """A count, or 'auto' (0): repeat until the decode ci95 is within the target."""
    if text == "auto":
        return 0
    if not text.isdigit() or int(text) < 1:
        raise typer.BadParameter("repetitions must be a positive count or 'auto'")
    return int(text)


def parse_seconds(text: str) -> float:
    """'300s', '5m', '1h' or plain seconds."""
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


@dataclass(frozen=True)
class Flag:
    """How one workload field is spelled on the command line."""

    names: tuple[str, ...]
    parse: Callable[[str], Any] | None = None  # text -> value; None: click converts
    metavar: str | None = None
    aliases: tuple[str, ...] = ()  # hidden, for one release
    shown_default: Callable[[Any], str] = str


def _sizes(*names: str, aliases: tuple[str, ...] = ()) -> Flag:
    return Flag(names, parse_sizes, "N[,N...]", aliases, lambda v: ",".join(map(str, v)))


def _duration(*names: str) -> Flag:
    return Flag(names, parse_seconds, "DURATION", shown_default=lambda v: f"{v:g}s")


FLAGS: dict[str, Flag] = {
    "n_prompt": _sizes("--n-prompt", "-p", aliases=("--prompt-tokens",)),
    "n_gen": _sizes("--n-gen", "-n", aliases=("--gen-tokens",)),
    "n_depth": _sizes("--n-depth", "-d"),
    "reps": Flag(("--reps", "-r"), parse_reps, "N|auto"),
    "warmup": Flag(("--warmup",)),
    "min_reps": Flag(("--min-reps",)),
    "max_reps": Flag(("--max-reps",)),
    "max_seconds": _duration("--max-time"),
    "target_ci": Flag(("--target-ci",)),
    "sustained_seconds": _duration("--sustained"),
    "window_seconds": _duration("--window"),
    "sample_hz": Flag(("--sample-hz",)),
    "idle_seconds": _duration("--idle-seconds"),
    "noisy_pct": Flag(("--noisy-pct",)),
    "cooldown_c": Flag(("--cooldown-to",), parse_celsius, "TEMP"),
    "cooldown_max_seconds": _duration("--cooldown-max"),
    "threads": Flag(("--threads", "-t")),
    "n_ctx": Flag(("--ctx-size", "-c")),
    "n_batch": Flag(("--batch-size", "-b")),
    "n_ubatch": Flag(("--ubatch-size", "-ub")),
    "n_gpu_layers": Flag(("--n-gpu-layers", "-ngl")),
    "flash_attn": Flag(("--flash-attn", "-fa"), shown_default=lambda v: v.value),
    "repack": Flag(("--repack/--no-repack",)),
    "provider": Flag(("--provider",)),
}

_PANELS = {
    "tests": "Workload",
    "repetitions": "Repetitions",
    "sensors": "Sensors",
    "engine": "Engine settings",
}


def _value_type(name: str) -> Any:
    """The type click converts to: text for fields this module parses itself."""
    if FLAGS[name].parse is not None:
        return str | None
    annotation = SECTIONS[FIELD_SECTIONS[name]].model_fields[name].annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base: Any = args[0] if args else annotation
    return base | None


def _parameters() -> list[inspect.Parameter]:
    params = []
    for name, section in FIELD_SECTIONS.items():
        flag, info = FLAGS[name], SECTIONS[section].model_fields[name]
        default = info.get_default(call_default_factory=True)
        option = typer.Option(
            *flag.names,
            help=info.description,
            metavar=flag.metavar,
            show_default="unset" if default is None else flag.shown_default(default),
            rich_help_panel=_PANELS[section],
        )
        params.append(_keyword(f"_wl_{name}", Annotated[_value_type(name), option]))
        for alias in flag.aliases:
            hidden = typer.Option(alias, hidden=True, metavar=flag.metavar)
            params.append(_keyword(_alias_param(alias), Annotated[str | None, hidden]))
    return params


def _keyword(name: str, annotation: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
    )


def _alias_param(alias: str) -> str:
    return "_alias_" + alias.lstrip("-").replace("-", "_")


def _given(values: dict[str, Any]) -> dict[str, Any]:
    """The workload fields the user set, read from the command line's values."""
    given = {}
    for name, flag in FLAGS.items():
        value = values.pop(f"_wl_{name}")
        for alias in flag.aliases:
            aliased = values.pop(_alias_param(alias))
            if aliased is not None:
                value = aliased if value is None else value
        if value is None:
            continue
        if flag.parse is not None:
            try:
                value = flag.parse(value)
            except typer.BadParameter as exc:
                raise typer.BadParameter(exc.message, param_hint=flag.names[0]) from None
        given[name] = value
    return given


def build_workload(given: dict[str, Any]) -> Workload:
    """The workload from the options given; the model's defaults fill the rest. An error
    names the option, not the field."""
    try:
        return Workload.from_flat(given)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = [str(p) for p in error["loc"] if str(p) in FLAGS]
            hint = FLAGS[where[-1]].names[0] if where else "workload settings"
            problems.append(f"{hint}: {error['msg'].removeprefix('Value error, ')}")
        raise typer.BadParameter("; ".join(problems)) from None


def workload_options(command: F) -> F:
    """Adds every workload option to `command`, which receives `workload: Workload`."""
    hints = typing.get_type_hints(command, include_extras=True)
    own = [
        p.replace(annotation=hints[p.name])
        for p in inspect.signature(command).parameters.values()
        if p.name != "workload"
    ]

    @functools.wraps(command)
    def wrapper(**values: Any) -> Any:
        workload = build_workload(_given(values))
        return command(**values, workload=workload)

    params = own + _parameters()
    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return typing.cast(F, wrapper)
