"""benchmarks/turns.py with benchmarks/turns_shim.c, against a stand-in llama-bench that
calls llama_memory_clear at llama-bench's gates: no segment of one side overlaps one of
the other, the sides take strict turns, and each of our repetitions is paired with the
llama-bench repetitions that really ran just before and just after it."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.turns import Turns, neighbours, paired_ratios, self_check
from edgebench.agent.runner import run_benchmark
from edgebench.errors import EdgebenchError
from edgebench.workload import RunSpec

ROOT = Path(__file__).resolve().parents[2]
WORK_S = 0.004
# The C compiler llama-cpp-python's own build needs, so present wherever the suite runs.
COMPILER = os.environ.get("CC") or shutil.which("cc") or "gcc"

# llama-bench's order of work: its context, a gate, its warm-up, then a gate before each
# repetition; JSON with one rate per repetition at the end.
STAND_IN = f"""#!{sys.executable}
import ctypes, json, os, sys, time
fake, log, reps, crash_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ctypes.CDLL(fake, mode=ctypes.RTLD_GLOBAL)
clear = ctypes.CDLL(None).llama_memory_clear  # found first in the preloaded shim
sync = ctypes.CDLL(None).llama_synchronize
def segment(name):
    start = time.monotonic_ns(); time.sleep({WORK_S})
    if name.startswith("rep"):  # a prompt, then three tokens
        for _ in range(4):
            sync(None); time.sleep(0.001)
    end = time.monotonic_ns()
    with open(log, "a") as f:
        f.write(f"lb {{name}} {{start}} {{end}} {{os.getpid()}}\\n")
segment("context")
clear(None, True)
segment("warmup")
for j in range(reps):
    if j == crash_at:
        os._exit(1)
    clear(None, True)
    segment(f"rep{{j}}")
base = 200.0 if os.environ.get("EDGEBENCH_TURN_WAIT_FIRST") else 100.0
print(json.dumps([{{"samples_ts": [base + j for j in range(reps)]}}]))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The real shim, and a library with the symbol it wraps."""
    folder = tmp_path_factory.mktemp("turns")
    shim, fake = folder / "libturns.so", folder / "libfakellama.so"
    source = folder / "fake.c"
    source.write_text(
        "#include <stdbool.h>\nvoid llama_memory_clear(void *m, bool d) {}\n"
        "void llama_synchronize(void *c) {}\n"
    )
    builds = ((shim, [ROOT / "benchmarks" / "turns_shim.c", "-ldl"]), (fake, [source]))
    for output, inputs in builds:
        command = [COMPILER, "-O2", "-shared", "-fPIC", "-o", str(output), *map(str, inputs)]
        subprocess.run(command, check=True)
    return shim, fake


def _start(
    built: tuple[Path, Path],
    tmp_path: Path,
    reps: int,
    crash_at: int = -1,
    we_start: bool = False,
    sync_log: bool = False,
) -> tuple[Turns, Path]:
    """A stand-in llama-bench with `reps` repetitions (dying before `crash_at`), taking
    turns with us through the real shim; and the log both sides write."""
    shim, fake = built
    log = tmp_path / "log"
    args = [str(fake), str(log), str(reps), str(crash_at)]
    turns = Turns.start(_stand_in(tmp_path), args, shim, we_start=we_start, sync_log=sync_log)
    return turns, log


def _stand_in(tmp_path: Path) -> Path:
    tool = tmp_path / "llama-bench"
    tool.write_text(STAND_IN)
    tool.chmod(0o755)
    return tool


def _work(log: Path, name: str) -> None:
    start = time.monotonic_ns()
    time.sleep(WORK_S)
    with open(log, "a") as f:
        f.write(f"us {name} {start} {time.monotonic_ns()} {os.getpid()}\n")


def _run_ours(turns: Turns, log: Path, reps: int) -> list[float]:
    """What our runner does: progress calls before the warm-up and each repetition."""
    turns.gate("preparing", 0, reps)  # not a gate: our model loads while llama-bench does
    turns.gate("warmup", 0, reps)
    _work(log, "warmup")
    for rep in range(reps):
        turns.gate("measuring", rep, reps)
        _work(log, f"rep{rep}")
    turns.gate("measuring", reps, reps)
    return turns.finish(timeout_s=30)


def _segments(log: Path) -> list[tuple[str, str, int, int]]:
    """(side, what, start, end) of every segment either side ran, in order."""
    return [(side, name, start, end) for side, name, start, end, _ in _rows(log)]


def _rows(log: Path) -> list[tuple[str, str, int, int, int]]:
    rows = [line.split() for line in log.read_text().splitlines()]
    parsed = ((s, n, int(a), int(b), int(pid)) for s, n, a, b, pid in rows)
    return sorted(parsed, key=lambda r: r[2])


@pytest.mark.parametrize("we_start", [False, True], ids=["llama-bench-first", "we-first"])
def test_the_two_sides_take_strict_turns_and_never_overlap(
    built: tuple[Path, Path], tmp_path: Path, we_start: bool
) -> None:
    reps = 8
    turns, log = _start(built, tmp_path, reps + 1, we_start=we_start)
    samples = _run_ours(turns, log, reps)

    assert samples == [100.0 * (1 + we_start) + j for j in range(reps + 1)]
    segments = _segments(log)
    assert len(segments) == 2 * (reps + 1) + 2
    for first, second in itertools.pairwise(segments):
        assert first[3] <= second[2], f"{first} overlaps {second}"
    # strict turns after llama-bench's context (made while our model loads), up to its
    # last repetition, which runs after we finished when it went first
    sides = [side for side, *_ in segments]
    if we_start:
        assert sides == ["lb", "lb"] + ["us", "lb"] * (reps + 1)
    else:
        assert sides == ["lb", "us"] * (reps + 1) + ["lb", "lb"]
    # every repetition of ours ran in a turn and is paired with its true neighbours
    assert sorted(turns.rep_turns) == list(range(reps))
    order = [(side, name) for side, name, _, _ in segments]
    for rep, turn in turns.rep_turns.items():
        at = order.index(("us", f"rep{rep}"))
        assert order[at - 1][0] == order[at + 1][0] == "lb"
        before, after = order[at - 1][1], order[at + 1][1]
        expected = None  # its warm-up and its repetition 0 are never used
        if before.startswith("rep") and int(before[3:]) >= 1:
            expected = (int(before[3:]), int(after[3:]))
        assert neighbours(turn, reps + 1, we_start) == expected


def test_paired_ratios_divide_by_the_neighbours_geometric_mean() -> None:
    theirs = [50.0, 100.0, 400.0, 100.0, 100.0]
    ours, turns = [10.0, 200.0, 300.0, 100.0], {0: 3, 1: 4, 2: 5, 3: 6}
    # llama-bench first: our turn 4 falls between its reps 1 and 2
    assert paired_ratios(ours, turns, theirs, we_started=False) == [
        pytest.approx(1.0), pytest.approx(1.5), pytest.approx(1.0)
    ]  # fmt: skip
    # we first: our turn 3 falls between its reps 1 and 2
    assert paired_ratios(ours, turns, theirs, we_started=True) == [
        pytest.approx(0.05), pytest.approx(1.0), pytest.approx(3.0)
    ]  # fmt: skip


def test_llama_bench_with_fewer_reps_leaves_ours_to_run_alone(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    turns, log = _start(built, tmp_path, 3)
    assert _run_ours(turns, log, 6) == [100.0, 101.0, 102.0]
    assert turns.alone and sorted(turns.rep_turns) == [0, 1, 2]


def test_a_llama_bench_that_dies_mid_run_is_a_clear_error_not_a_hang(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    turns, log = _start(built, tmp_path, 6, crash_at=2)
    with pytest.raises(EdgebenchError, match="llama-bench failed"):
        _run_ours(turns, log, 6)
    assert turns.process.returncode == 1


def test_the_runner_reports_a_gated_phase_before_every_repetition(
    tiny_model: Path, tmp_path: Path
) -> None:
    """turns.py gates on these progress calls; a runner that stopped making them would
    leave the two tools running at once."""
    calls: list[tuple[str, int, int]] = []
    spec = RunSpec.of(n_prompt=(4,), n_gen=(3,), reps=3)
    record = lambda phase, done, total: calls.append((phase, done, total))  # noqa: E731
    run_benchmark(tiny_model, spec, cache_dir=tmp_path, progress=record)
    gated = [c for c in calls if c[0] in ("warmup", "measuring")]
    assert gated == [("warmup", 0, 3), ("measuring", 0, 3), ("measuring", 1, 3),
                     ("measuring", 2, 3), ("measuring", 3, 3)]  # fmt: skip


def test_llama_bench_takes_turns_with_itself_for_the_self_check(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    shim, fake = built
    log, reps = tmp_path / "log", 8
    args = [str(fake), str(log), str(reps), "-1"]
    ratios = self_check(_stand_in(tmp_path), args, shim, timeout_s=30)

    rows = _rows(log)
    assert len(rows) == 2 * (reps + 2)
    # both make their context at once; from then on one runs at a time, in turns
    pids = [pid for *_, pid in rows[2:]]
    assert pids == [pids[0], pids[1]] * (reps + 1) and pids[0] != pids[1]
    for first_row, second_row in itertools.pairwise(rows[1:]):
        assert first_row[3] <= second_row[2]
    # the repetition j of the one that waited (its rates 200 + j) over the geometric
    # mean of the other's j - 1 and j (100 + j)
    assert ratios == [
        pytest.approx((200 + j) / ((99 + j) * (100 + j)) ** 0.5) for j in range(2, reps)
    ]


def test_the_shim_times_llama_benchs_decode_steps_inside_a_repetition(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    """Four synchronizes a repetition (a prompt, then three tokens): three tokens over the
    time from the first to the last, per repetition, as our decode_tps counts."""
    turns, log = _start(built, tmp_path, 5, sync_log=True)
    _run_ours(turns, log, 4)
    # a line per segment: its context, its warm-up, then five repetitions of four
    assert [len(stamps) for stamps in turns.segment_syncs] == [0, 0, 4, 4, 4, 4, 4]
    rates = turns.decode_rates_after_prompt()
    assert rates == [
        pytest.approx(3 / ((stamps[-1] - stamps[0]) / 1e9)) for stamps in turns.segment_syncs[2:]
    ]
    assert all(100 < rate < 1000 for rate in rates)  # three 1 ms sleeps: ~300 tokens/s
