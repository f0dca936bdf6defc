"""Our runner and llama-bench taking turns, one repetition each (the Python half of
benchmarks/turns_shim.c; used by `python -m benchmarks.reference`).

Why: alternating whole runs of the two tools left a few % between them that no part of
our loop explained (RESULTS.md "Reference check"), and on this VM the machine's speed
drifts within seconds. Taking turns repetition by repetition, each tool's repetition
follows one of the other's, and the two neighbours of ours are a second apart: both
tools meet the same machine and drift cancels within each pair.

The protocol: llama-bench, with the shim preloaded, starts holding the turn (or we do:
`we_start`); at each of its gates (once after making its context, then before each
repetition) it hands the turn over and waits. Our runner's progress callback is our
gate, at the warm-up and before each repetition. One byte per hand-over through a FIFO
each way: 't' (your turn) or 'x' (finished: run on alone).
"""

from __future__ import annotations

import errno
import math
import os
import select
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgebench.agent.reference import llama_bench_rows, llama_bench_samples
from edgebench.errors import EdgebenchError

# The phases of our runner that precede a repetition (agent/runner.py's progress calls).
GATED_PHASES = frozenset({"warmup", "measuring"})
# llama-bench's segments between its gates: 0 until the first (its context made), 1 its
# warm-up, then one per repetition.
FIRST_REP_SEGMENT = 2
HANDOVER_POLL_S = 0.0005


@dataclass
class Turns:
    """One llama-bench process taking turns with this one."""

    process: subprocess.Popen[str]
    inbox: Path  # where llama-bench hands us the turn
    outbox: Path
    folder: tempfile.TemporaryDirectory[str]
    we_started: bool = False  # we held the first turn, llama-bench waited
    holding: bool = False
    alone: bool = False
    received: int = 0  # turns received so far
    # our repetition -> the turn it ran in; only repetitions run while taking turns
    rep_turns: dict[int, int] = field(default_factory=dict)
    # with sync_log: per segment of llama-bench, when each llama_synchronize returned (ns)
    segment_syncs: list[list[int]] = field(default_factory=list)

    @classmethod
    def start(
        cls, tool: Path, args: list[str], shim: Path, *, we_start: bool = False,
        sync_log: bool = False,
    ) -> Turns:  # fmt: skip
        """Starts llama-bench with the shim. The side that goes second has been measured
        0-2% faster than the first when llama-bench took turns with itself (RESULTS.md),
        so a fair comparison runs both orders (`we_start`)."""
        folder = tempfile.TemporaryDirectory(prefix="edgebench-turns-")
        inbox, outbox = Path(folder.name, "to-us"), Path(folder.name, "to-llama-bench")
        os.mkfifo(inbox)
        os.mkfifo(outbox)
        env = dict(os.environ, LD_PRELOAD=str(shim), EDGEBENCH_TURN_IN=str(outbox),
                   EDGEBENCH_TURN_OUT=str(inbox))  # fmt: skip
        if we_start:
            env["EDGEBENCH_TURN_WAIT_FIRST"] = "1"
        if sync_log:
            env["EDGEBENCH_TURN_SYNC_LOG"] = str(Path(folder.name, "syncs"))
        process = subprocess.Popen(
            [str(tool), *args, "-o", "json"], env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        return cls(process=process, inbox=inbox, outbox=outbox, folder=folder,
                   we_started=we_start, holding=we_start)  # fmt: skip

    def gate(self, phase: str, done: int, total: int) -> None:
        """Our runner's progress callback: hands the turn over before each repetition."""
        if phase not in GATED_PHASES or self.alone:
            return
        if self.holding:
            self._send(b"t")
        self._wait()
        if phase == "measuring" and done < total and not self.alone:
            self.rep_turns[done] = self.received

    def finish(self, timeout_s: float = 600) -> list[float]:
        """Lets llama-bench run on alone, waits for it and returns every repetition's rate."""
        if self.holding and not self.alone:
            self._send(b"x")
        try:
            rates = _rates(self.process, timeout_s)
            syncs = Path(self.folder.name, "syncs")
            if syncs.exists():
                lines = syncs.read_text().splitlines()
                self.segment_syncs = [[int(stamp) for stamp in line.split()] for line in lines]
            return rates
        finally:
            self.close()

    def decode_rates_after_prompt(self) -> list[float]:
        """Per repetition of llama-bench's pg test: its tokens decoded after the first over
        the time from the prompt's synchronize to the last token's, as our decode_tps is
        counted (sync_log needed)."""
        rates = []
        for stamps in self.segment_syncs[FIRST_REP_SEGMENT:]:
            if len(stamps) < 2 or stamps[-1] <= stamps[0]:
                raise EdgebenchError("a llama-bench repetition has no decode steps to time")
            rates.append((len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1e9))
        return rates

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.folder.cleanup()

    def _send(self, message: bytes) -> None:
        # Non-blocking, so a llama-bench that died instead of waiting cannot hang us.
        while True:
            try:
                fd = os.open(self.outbox, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as error:  # ENXIO: llama-bench is not reading yet
                if error.errno != errno.ENXIO:
                    raise
            if self.process.poll() is not None:
                self.alone = True
                return
            time.sleep(HANDOVER_POLL_S)
        try:
            os.write(fd, message)
        finally:
            os.close(fd)
        self.holding = False

    def _wait(self) -> None:
        message = self._receive()
        if message == b"t":
            self.holding = True
            self.received += 1
        elif message in (b"x", b""):  # finished, or gone: its exit status will tell
            self.alone = True
        else:
            raise EdgebenchError(f"unexpected turn message {message!r} from llama-bench")

    def _receive(self) -> bytes:
        fd = os.open(self.inbox, os.O_RDONLY | os.O_NONBLOCK)
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            while True:
                if poller.poll(100):
                    return os.read(fd, 1)  # b"": it closed without a word
                if self.process.poll() is not None:
                    return b""
        finally:
            os.close(fd)


def neighbours(turn: int, reference_reps: int, we_started: bool) -> tuple[int, int] | None:
    """llama-bench's repetitions just before and just after ours run in `turn` (the n-th
    turn we received). Its segments run between its gates: 0 until its first, 1 its
    warm-up, j + 2 its repetition j. Our n-th turn falls between its segments n - 1 and n
    when it started, n and n + 1 when we did. None where either is missing or is its
    repetition 0, which follows its own depth prefill and is dropped as in
    agent/reference.py."""
    before = turn - 1 + int(we_started) - FIRST_REP_SEGMENT
    after = before + 1
    if before < 1 or after >= reference_reps:
        return None
    return before, after


def paired_ratios(
    ours: list[float], rep_turns: dict[int, int], theirs: list[float], *, we_started: bool
) -> list[float]:
    """Each of our repetitions over the geometric mean of its two llama-bench neighbours
    (the one before and the one after cancel a steady drift between them)."""
    ratios = []
    for rep, turn in sorted(rep_turns.items()):
        pair = neighbours(turn, len(theirs), we_started)
        if pair is not None:
            ratios.append(ours[rep] / math.sqrt(theirs[pair[0]] * theirs[pair[1]]))
    return ratios


def self_check(tool: Path, args: list[str], shim: Path, timeout_s: float = 1800) -> list[float]:
    """llama-bench taking turns with itself: each repetition of the process that waited
    first over the geometric mean of the other's two around it. A fair method gives 1;
    here the side that goes second came out 0-2% ahead (RESULTS.md), which is why
    reference.py runs half its repetitions in each order."""
    with tempfile.TemporaryDirectory(prefix="edgebench-turns-") as folder:
        to_first, to_second = Path(folder, "to-first"), Path(folder, "to-second")
        os.mkfifo(to_first)
        os.mkfifo(to_second)
        base = dict(os.environ, LD_PRELOAD=str(shim))
        envs = (
            dict(base, EDGEBENCH_TURN_IN=str(to_first), EDGEBENCH_TURN_OUT=str(to_second)),
            dict(base, EDGEBENCH_TURN_IN=str(to_second), EDGEBENCH_TURN_OUT=str(to_first),
                 EDGEBENCH_TURN_WAIT_FIRST="1"),
        )  # fmt: skip
        processes = [
            subprocess.Popen([str(tool), *args, "-o", "json"], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for env in envs
        ]  # fmt: skip
        try:
            first, second = (_rates(process, timeout_s) for process in processes)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    # the second's repetition j runs in its turn j + 2, as ours do against llama-bench
    pairs = [(j, neighbours(j + FIRST_REP_SEGMENT, len(first), False)) for j in range(len(second))]
    return [second[j] / math.sqrt(first[p[0]] * first[p[1]]) for j, p in pairs if p is not None]


def _rates(process: subprocess.Popen[str], timeout_s: float) -> list[float]:
    stdout, stderr = process.communicate(timeout=timeout_s)
    return llama_bench_samples(llama_bench_rows(process.returncode, stdout, stderr))
