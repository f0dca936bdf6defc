"""Our runner and llama-bench taking turns, one repetition each (the Python half of
benchmarks/turns_shim.c; used by `python -m benchmarks.reference --turns`).

Why: alternating whole runs of the two tools left a few % between them that no part of
our loop explained (RESULTS.md "Reference check"), and on this VM the machine's speed
drifts within seconds. Taking turns repetition by repetition, each tool's repetition
follows one of the other's, and the two neighbours of ours are a second apart: both
tools meet the same machine and drift cancels within each pair.

The protocol: llama-bench, with the shim preloaded, starts holding the turn; at each of
its gates (once after making its context, then before each repetition) it hands the
turn over and waits. Our runner's progress callback is our gate, at the warm-up and
before each repetition. One byte per hand-over through a FIFO each way: 't' (your turn)
or 'x' (finished: run on alone).
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
    holding: bool = False
    alone: bool = False
    received: int = 0  # turns received so far
    # our repetition -> the turn it ran in; only repetitions run while taking turns
    rep_turns: dict[int, int] = field(default_factory=dict)

    @classmethod
    def start(cls, tool: Path, args: list[str], shim: Path) -> Turns:
        folder = tempfile.TemporaryDirectory(prefix="edgebench-turns-")
        inbox, outbox = Path(folder.name, "to-us"), Path(folder.name, "to-llama-bench")
        os.mkfifo(inbox)
        os.mkfifo(outbox)
        env = dict(os.environ, LD_PRELOAD=str(shim), EDGEBENCH_TURN_IN=str(outbox),
                   EDGEBENCH_TURN_OUT=str(inbox))  # fmt: skip
        process = subprocess.Popen(
            [str(tool), *args, "-o", "json"], env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        return cls(process=process, inbox=inbox, outbox=outbox, folder=folder)

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
            stdout, stderr = self.process.communicate(timeout=timeout_s)
        finally:
            self.close()
        return llama_bench_samples(llama_bench_rows(self.process.returncode, stdout, stderr))

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


def neighbours(turn: int, reference_reps: int) -> tuple[int, int] | None:
    """llama-bench's repetitions just before and just after ours run in `turn` (the n-th
    turn we received): the n-th turn falls between its segments n - 1 and n. None where
    either is missing or is its repetition 0, which follows its own depth prefill and is
    dropped as in agent/reference.py."""
    before = turn - 1 - FIRST_REP_SEGMENT
    after = turn - FIRST_REP_SEGMENT
    if before < 1 or after >= reference_reps:
        return None
    return before, after


def paired_ratios(ours: list[float], rep_turns: dict[int, int], theirs: list[float]) -> list[float]:
    """Each of our repetitions over the geometric mean of its two llama-bench neighbours
    (the one before and the one after cancel a steady drift between them)."""
    ratios = []
    for rep, turn in sorted(rep_turns.items()):
        pair = neighbours(turn, len(theirs))
        if pair is not None:
            ratios.append(ours[rep] / math.sqrt(theirs[pair[0]] * theirs[pair[1]]))
    return ratios
