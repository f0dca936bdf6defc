"""Runs one benchmark in a child process of its own.

Inference engines are native code that can crash the process they run in (llama.cpp's AMX
matmul on some Xeons; a CUDA build of llama.cpp and torch's CUDA libraries loaded into one
process: see NOTES.md). In a child, such a crash fails that run with a clear message and
the agent keeps serving; the engines' libraries never meet; the run's peak memory is its
own; and a cancelled run stops at once instead of at the next repetition.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from edgebench.agent.backends.base import BackendError
from edgebench.agent.runner import Progress, run_benchmark
from edgebench.measure.record import BenchResult
from edgebench.workload import RunSpec

POLL_S = 0.1
Child = Callable[[Connection, Path, RunSpec, Path, "str | None"], None]


class EngineCrashed(BackendError):
    """The child process died without reporting (a native crash, the OOM killer...)."""


def measure_in_child(
    model: Path,
    spec: RunSpec,
    *,
    cache_dir: Path,
    source_sha256: str | None,
    progress: Progress,
    check: Callable[[], None],
    child: Child | None = None,
) -> list[BenchResult]:
    """run_benchmark in a spawned process. `progress` (on each step the child reports)
    and `check` (every POLL_S) are called here, in the caller's process; either may raise
    to stop the run, and the child is then killed."""
    context = multiprocessing.get_context("spawn")  # no fork of a threaded gRPC process
    ours, theirs = context.Pipe()
    process = context.Process(
        target=child or _child_main,
        args=(theirs, model, spec, cache_dir, source_sha256),
        name="edgebench-run",
        daemon=True,
    )
    process.start()
    theirs.close()
    try:
        return _relay(process, ours, progress, check)
    finally:
        if process.is_alive():
            process.kill()
        process.join(timeout=10)
        ours.close()


def _relay(
    process: Any, pipe: Connection, progress: Progress, check: Callable[[], None]
) -> list[BenchResult]:
    while True:
        if not pipe.poll(POLL_S):
            check()  # stops even a long repetition at once (cancel, lost lease)
            if not process.is_alive() and not pipe.poll():
                raise _died(process)
            continue
        try:
            kind, payload = pipe.recv()
        except EOFError:
            process.join(timeout=10)
            raise _died(process) from None
        if kind == "progress":
            progress(*payload)
        elif kind == "done":
            results: list[BenchResult] = payload
            return results
        else:
            raise BackendError(payload)


def _died(process: Any) -> EngineCrashed:
    code = process.exitcode
    if code is not None and code < 0:
        how = f"was killed by {signal.Signals(-code).name}"
    else:
        how = f"exited with status {code}"
    return EngineCrashed(f"the engine process {how} during the run (a crash in native code)")


def _exit_with_parent(parent: int) -> None:
    """A killed agent (SIGKILL, OOM killer) must not leave its run computing on: the child
    ends itself once it has been re-parented."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _child_main(
    pipe: Connection, model: Path, spec: RunSpec, cache_dir: Path, source_sha256: str | None
) -> None:
    def report(phase: str, done: int, total: int) -> None:
        pipe.send(("progress", (phase, done, total)))

    _exit_with_parent(os.getppid())
    try:
        results = run_benchmark(
            model, spec, cache_dir=cache_dir, source_sha256=source_sha256, progress=report
        )
    except Exception as exc:  # every failure goes back as the run's error message
        pipe.send(("error", str(exc) or type(exc).__name__))
    else:
        pipe.send(("done", results))
    finally:
        pipe.close()
