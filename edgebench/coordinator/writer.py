"""One thread for the agent protocol's writes, a batch of them per transaction.

Results, lease touches, dispatch rounds, reaps and last-seen flushes are queued here from
the event loop; the thread takes everything queued, runs it in one transaction and
commits once (group commit). Before, each write ran in its own transaction on the default
thread pool: the pool's threads queued on SQLite's single writer, and a dispatch round
waited behind them (benchmarks/fleet.py: seconds).

Items of a vector (results) are written by one call per batch, before the batch's other
operations, which run in the order they came: moving a result earlier is always safe (it
only lands sooner), and one call for all saves the thread a database call, and so a GIL
hand-off, per item.

An operation that refuses (StoreError) has written nothing (coordinator/errors.py), so the
rest of its batch commits. Any other failure rolls the batch back and each operation is
run again in a transaction of its own, so one bad operation fails alone. An operation may
therefore run twice, and its outcome is only reported after its commit.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlmodel import Session

from edgebench.coordinator.errors import StoreError
from edgebench.coordinator.store import Store

log = logging.getLogger("edgebench.coordinator")
T = TypeVar("T")
MAX_BATCH = 1000  # operations per transaction, so that one commit never takes long
# Writes many items at once: one outcome per item, a value or the StoreError refusing it.
Vector = Callable[[Session, list[Any]], Sequence[Any]]


@dataclass
class _Operation:
    future: asyncio.Future[Any]
    apply: Callable[[Session], Any] | None = None  # or:
    vector: Vector | None = None
    item: Any = None


@dataclass
class _Outcome:
    value: Any = None
    error: BaseException | None = None


class StoreWriter:
    def __init__(self, store: Store, vectors: Sequence[Vector] = ()) -> None:
        # More than one writer may write to one store: on SQLite they take turns (Store's
        # writer lock), on PostgreSQL they write at once.
        self.store = store
        self.vectors = list(vectors)  # written first in every batch, in this order
        self._queue: queue.SimpleQueue[_Operation | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.batches = 0  # committed transactions, for tests and the fleet benchmark

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name="store-writer", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Finishes what is queued, then ends the thread."""
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    def submit(self, apply: Callable[[Session], T]) -> asyncio.Future[T]:
        """Queues apply(session) for the writer's next transaction, now. The future gets
        its value after the commit, or what it raised (StoreError: a refusal, nothing
        written)."""
        return self._put(_Operation(self._new_future(), apply=apply))

    async def call(self, apply: Callable[[Session], T]) -> T:
        return await self.submit(apply)

    def submit_item(self, vector: Vector, item: Any) -> asyncio.Future[Any]:
        """Queues one item of a vector given to the constructor; the future gets its
        outcome after the commit (a StoreError outcome is raised)."""
        if vector not in self.vectors:
            raise ValueError("not a vector of this writer")
        return self._put(_Operation(self._new_future(), vector=vector, item=item))

    def _new_future(self) -> asyncio.Future[Any]:
        if self._thread is None:
            raise RuntimeError("the store writer is not running")
        return asyncio.get_running_loop().create_future()

    def _put(self, operation: _Operation) -> asyncio.Future[Any]:
        self._queue.put(operation)
        return operation.future

    def _work(self) -> None:
        while batch := self._take():
            outcomes = self._commit(batch)
            assert self._loop is not None
            self._loop.call_soon_threadsafe(_settle, batch, outcomes)

    def _take(self) -> list[_Operation]:
        """Blocks for the first operation, then takes whatever else is queued."""
        first = self._queue.get()
        if first is None:
            return []
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                following = self._queue.get_nowait()
            except queue.Empty:
                break
            if following is None:
                self._queue.put(None)  # stop after this batch
                break
            batch.append(following)
        return batch

    def _commit(self, batch: list[_Operation]) -> list[_Outcome]:
        try:
            with self.store.writing() as session:
                outcomes = self._apply_all(batch, session)
            self.batches += 1
            return [outcomes[id(operation)] for operation in batch]
        except Exception as exc:
            if len(batch) == 1:
                # Not a refusal: the caller sees the error and acknowledges nothing, so an
                # agent keeps its result in the outbox and sends it again.
                log.exception("store write failed")
                return [_Outcome(error=exc)]
            log.warning("a batch of %d store writes failed; retrying them one by one", len(batch))
            return [outcome for operation in batch for outcome in self._commit([operation])]

    def _apply_all(self, batch: list[_Operation], session: Session) -> dict[int, _Outcome]:
        outcomes: dict[int, _Outcome] = {}
        for vector in self.vectors:
            members = [operation for operation in batch if operation.vector is vector]
            if members:
                results = vector(session, [operation.item for operation in members])
                for operation, result in zip(members, results, strict=True):
                    outcomes[id(operation)] = _as_outcome(result)
        for operation in batch:
            if operation.apply is not None:
                outcomes[id(operation)] = _apply(operation.apply, session)
        return outcomes


def _as_outcome(result: Any) -> _Outcome:
    return _Outcome(error=result) if isinstance(result, StoreError) else _Outcome(value=result)


def _apply(apply: Callable[[Session], Any], session: Session) -> _Outcome:
    try:
        return _Outcome(value=apply(session))
    except StoreError as exc:  # refused before writing: the batch goes on
        return _Outcome(error=exc)


def _settle(batch: list[_Operation], outcomes: list[_Outcome]) -> None:
    for operation, outcome in zip(batch, outcomes, strict=True):
        if operation.future.done():  # the caller went away (session closed)
            continue
        if outcome.error is not None:
            operation.future.set_exception(outcome.error)
        else:
            operation.future.set_result(outcome.value)
