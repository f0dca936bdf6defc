"""The coordinator's garbage-collection policy (server._short_garbage_collections)."""

from __future__ import annotations

import asyncio
import gc
import weakref

from edgebench.coordinator.server import _short_garbage_collections


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cycle collector frees it


def test_frozen_cycles_wait_for_the_periodic_full_collection() -> None:
    async def scenario() -> tuple[bool, bool, int]:
        node = _Node()
        gone = weakref.ref(node)
        policy = asyncio.create_task(_short_garbage_collections(0.05, 0.5))
        await asyncio.sleep(0.15)  # frozen by now
        frozen = gc.get_freeze_count()
        del node
        gc.collect()  # a collection does not walk frozen objects
        kept = gone() is not None
        await asyncio.sleep(0.6)  # the full collection has run
        freed = gone() is None
        policy.cancel()
        await asyncio.gather(policy, return_exceptions=True)
        assert gc.get_freeze_count() == 0, "objects stayed frozen after serving ended"
        return kept, freed, frozen

    try:
        kept, freed, frozen = asyncio.run(scenario())
    finally:
        gc.unfreeze()
    assert frozen > 0
    assert kept, "a frozen cycle was collected before the full collection"
    assert freed, "the full collection did not free the cycle"
