"""Runs one benchmark in a child process of its own.

Inference engines are native code that can crash the process they run in (llama.cpp's AMX
matmul on some Xeons; a CUDA build of llama.cpp and torch's CUDA libraries loaded into one
process: see NOTES.md). In a child, such a crash fails that run with a clear message and
the agent keeps serving; the engines' libraries never meet; the run's peak memory is its
own; and a cancelled run stops at once instead of at the next repetition.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from edgebench.agent.backends.base import BackendError, WorkloadError
from edgebench.agent.runner import Progress, run_benchmark
from edgebench.measure.record import BenchResult
from edgebench.workload import RunSpec

POLL_S = 0.1
Child = Callable[[Connection, Path, RunSpec, Path, "str | None"], None]


class EngineCrashed(BackendError):
    """The child process died without reporting (a native crash, the OOM killer...)."""


class RunLimitExceeded(BackendError):
    """The child went past its memory or time limit and was killed."""


@dataclass(frozen=True)
class RunLimits:
    """What one run's child may take (`agent run --run-memory-gb/--run-timeout`): past
    either it is killed and the run fails with the reason, before the kernel's OOM killer
    picks a process of its own choosing (perhaps the agent) or a hung engine holds the
    device forever. None: no limit."""

    memory_bytes: int | None = None
    seconds: float | None = None

    def check(self, process: Any, started: float) -> None:
        if self.seconds is not None and time.monotonic() - started > self.seconds:
            raise RunLimitExceeded(
                f"the run took longer than its limit of {self.seconds:g} s and was stopped"
            )
        if self.memory_bytes is None:
            return
        try:
            rss = psutil.Process(process.pid).memory_info().rss
        except psutil.Error:  # it has just ended: the relay reads why
            return
        if rss > self.memory_bytes:
            raise RunLimitExceeded(
                f"the engine process used {rss / 2**20:.0f} MiB, over its limit of "
                f"{self.memory_bytes / 2**20:.0f} MiB, and was stopped"
            )


NO_LIMITS = RunLimits()


def measure_in_child(
    model: Path,
    spec: RunSpec,
    *,
    cache_dir: Path,
    source_sha256: str | None,
    progress: Progress,
    check: Callable[[], None],
    child: Child | None = None,
    limits: RunLimits = NO_LIMITS,
) -> list[BenchResult]:
    """run_benchmark in a spawned process. `progress` (on each step the child reports)
    and `check` (every POLL_S) are called here, in the caller's process; either may raise
    to stop the run, and the child is then killed, as it is past its `limits`."""
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
        started = time.monotonic()

        def check_all() -> None:
            check()
            limits.check(process, started)

        return _relay(process, ours, progress, check_all)
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
            check()  # stops even a long repetition at once (cancel, lost lease, limits)
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
            check()
        elif kind == "done":
            results: list[BenchResult] = payload
            return results
        else:
            message, kind = payload
            raise (WorkloadError if kind == "workload" else BackendError)(message)


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


def run_at_full_priority() -> None:
    """The measuring child runs at nice 0 whatever its parent's niceness (`agent run
    --nice`): the control process yields to the owner's work, the measurement must not.
    Going back down needs CAP_SYS_NICE (the installed unit grants it, or root); without
    it the run keeps the inherited niceness, and its environment says so."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, 0)


def _child_main(
    pipe: Connection, model: Path, spec: RunSpec, cache_dir: Path, source_sha256: str | None
) -> None:
    def report(phase: str, done: int, total: int) -> None:
        pipe.send(("progress", (phase, done, total)))

    _exit_with_parent(os.getppid())
    run_at_full_priority()
    try:
        results = run_benchmark(
            model, spec, cache_dir=cache_dir, source_sha256=source_sha256, progress=report
        )
    except Exception as exc:  # every failure goes back as the run's error message
        kind = "workload" if isinstance(exc, WorkloadError) else "device"
        pipe.send(("error", (str(exc) or type(exc).__name__, kind)))
    else:
        pipe.send(("done", results))
    finally:
        pipe.close()
