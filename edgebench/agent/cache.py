"""The agent's model cache, content-addressed by sha256.

A download goes to `<sha>.part` and resumes from its size after an interruption; the
file is moved into place only once its hash is verified.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from edgebench.errors import EdgebenchError

# (offset) -> stream of (offset, data) chunks from the coordinator
Fetch = Callable[[int], AsyncIterator[tuple[int, bytes]]]


class CacheError(EdgebenchError, RuntimeError):
    pass


class ModelCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, sha256: str, suffix: str = ".gguf") -> Path:
        return self.root / f"{sha256}{suffix}"

    async def ensure(self, sha256: str, fetch: Fetch) -> Path:
        final = self.path_for(sha256)
        if final.is_file():
            return final
        self.root.mkdir(parents=True, exist_ok=True)
        partial = final.with_name(final.name + ".part")
        offset = partial.stat().st_size if partial.exists() else 0
        with partial.open("ab") as handle:
            async for chunk_offset, data in fetch(offset):
                if chunk_offset != offset:
                    raise CacheError("the coordinator sent a chunk at the wrong offset")
                handle.write(data)
                offset += len(data)
        if file_sha256(partial) != sha256:
            partial.unlink()
            raise CacheError(f"downloaded model does not match its sha256 {sha256}; deleted")
        os.replace(partial, final)
        return final


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
