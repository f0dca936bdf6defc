"""Runs in a child process: results, errors and crashes come back; cancel kills the child."""

from __future__ import annotations

import multiprocessing
import os
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from edgebench.agent.backends.base import BackendError, WorkloadError
from edgebench.agent.isolation import EngineCrashed, RunLimitExceeded, RunLimits, measure_in_child
from edgebench.workload import RunSpec


def _segfaulting_engine(pipe: Connection, *_: object) -> None:
    pipe.send(("progress", ("measuring", 0, 3)))
    os.kill(os.getpid(), 11)  # what a crash in native code looks like from outside


def _endless_rep(pipe: Connection, *_: object) -> None:
    pipe.send(("progress", ("measuring", 0, 3)))
    time.sleep(600)


class Stop(Exception):
    pass


def test_a_run_in_a_child_returns_its_results(tiny_model: Path, tmp_path: Path) -> None:
    steps: list[str] = []
    results = measure_in_child(
        tiny_model, RunSpec.of(reps=2, n_prompt=(8,), n_gen=(4,)), cache_dir=tmp_path,
        source_sha256=None, progress=lambda phase, *_: steps.append(phase), check=lambda: None,
    )  # fmt: skip
    assert len(results) == 1 and results[0].reps == 2
    assert "loading" in steps and "measuring" in steps


def test_an_engine_error_in_the_child_is_the_run_error(tmp_path: Path) -> None:
    (tmp_path / "x.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(BackendError, match="not a GGUF"):
        measure_in_child(tmp_path / "x.gguf", RunSpec.of(reps=1), cache_dir=tmp_path,
                         source_sha256=None, progress=lambda *_: None,
                         check=lambda: None)  # fmt: skip


def test_a_crashing_engine_fails_the_run_not_the_agent(tmp_path: Path) -> None:
    with pytest.raises(EngineCrashed, match="killed by SIGSEGV"):
        measure_in_child(tmp_path, RunSpec.of(), cache_dir=tmp_path, source_sha256=None,
                         progress=lambda *_: None, check=lambda: None,
                         child=_segfaulting_engine)  # fmt: skip


def test_a_stop_request_kills_a_repetition_in_progress(tmp_path: Path) -> None:
    deadline = time.monotonic() + 1.0

    def check() -> None:
        if time.monotonic() > deadline:
            raise Stop()

    started = time.monotonic()
    with pytest.raises(Stop):
        measure_in_child(tmp_path, RunSpec.of(), cache_dir=tmp_path, source_sha256=None,
                         progress=lambda *_: None, check=check, child=_endless_rep)  # fmt: skip
    assert time.monotonic() - started < 5  # not the child's 600 s
    assert multiprocessing.active_children() == []  # killed and reaped


def _hungry_engine(pipe: Connection, *_: object) -> None:
    pipe.send(("progress", ("measuring", 0, 3)))
    hoard = bytearray(300 * 2**20)  # touched: resident, not only reserved
    for offset in range(0, len(hoard), 4096):
        hoard[offset] = 1
    time.sleep(600)


def test_a_run_past_its_memory_limit_is_stopped_with_the_reason(tmp_path: Path) -> None:
    limits = RunLimits(memory_bytes=200 * 2**20)
    started = time.monotonic()
    with pytest.raises(RunLimitExceeded, match=r"over its limit of 200 MiB, and was stopped"):
        measure_in_child(tmp_path, RunSpec.of(), cache_dir=tmp_path, source_sha256=None,
                         progress=lambda *_: None, check=lambda: None, child=_hungry_engine,
                         limits=limits)  # fmt: skip
    assert time.monotonic() - started < 30
    assert not [p for p in multiprocessing.active_children() if p.name == "edgebench-run"]


def test_a_run_past_its_time_limit_is_stopped_with_the_reason(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(RunLimitExceeded, match=r"took longer than its limit of 1 s"):
        measure_in_child(tmp_path, RunSpec.of(), cache_dir=tmp_path, source_sha256=None,
                         progress=lambda *_: None, check=lambda: None, child=_endless_rep,
                         limits=RunLimits(seconds=1.0))  # fmt: skip
    assert time.monotonic() - started < 10
    assert not [p for p in multiprocessing.active_children() if p.name == "edgebench-run"]


def test_a_model_the_engine_cannot_read_is_a_workload_failure(tmp_path: Path) -> None:
    """Any device would fail it alike: the class crosses the pipe with the message."""
    (tmp_path / "x.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(WorkloadError, match="not a GGUF"):
        measure_in_child(tmp_path / "x.gguf", RunSpec.of(reps=1), cache_dir=tmp_path,
                         source_sha256=None, progress=lambda *_: None,
                         check=lambda: None)  # fmt: skip
    with pytest.raises(BackendError) as crashed:
        measure_in_child(tmp_path, RunSpec.of(), cache_dir=tmp_path, source_sha256=None,
                         progress=lambda *_: None, check=lambda: None,
                         child=_segfaulting_engine)  # fmt: skip
    assert not isinstance(crashed.value, WorkloadError)  # a crash is the device's
