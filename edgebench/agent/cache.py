"""The agent's model cache, content-addressed by sha256.

A download goes to `<sha>.part` and resumes from its size after an interruption; the
file is moved into place only once its hash is verified.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from edgebench.errors import EdgebenchError
from edgebench.modelfiles import file_sha256, tar_tree_sha256, unpack

# (offset) -> stream of (offset, data) chunks from the coordinator
Fetch = Callable[[int], AsyncIterator[tuple[int, bytes]]]


class CacheError(EdgebenchError, RuntimeError):
    pass


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def checked_sha256(sha256: str) -> str:
    """A model's name from the coordinator becomes a file name in the cache: only 64
    lowercase hex characters can (no path, no `..`)."""
    if not _SHA256.match(sha256):
        raise CacheError(f"the coordinator named a model {sha256[:80]!r}, which is not a sha256")
    return sha256


class ModelCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, sha256: str, suffix: str = ".gguf") -> Path:
        return self.root / f"{sha256}{suffix}"

    async def ensure_model(
        self, sha256: str, fmt: str, fetch: Fetch, size_bytes: int | None = None
    ) -> Path:
        """The model ready to load: a GGUF file, or a folder unpacked from its archive.
        `size_bytes`: what the coordinator declared; a download never writes more."""
        checked_sha256(sha256)
        if fmt == "gguf":
            return await self.ensure(sha256, fetch, size_bytes=size_bytes)
        folder = self.root / sha256
        if folder.is_dir():
            return folder
        # A folder's id is the hash of its files (tree_sha256), checked on the archive.
        archive = await self.ensure(
            sha256, fetch, suffix=".tar", digest=tar_tree_sha256, size_bytes=size_bytes
        )
        try:
            return unpack(archive, folder)
        finally:
            archive.unlink(missing_ok=True)  # the unpacked folder is what stays cached

    async def ensure(
        self,
        sha256: str,
        fetch: Fetch,
        suffix: str = ".gguf",
        digest: Callable[[Path], str] = file_sha256,
        size_bytes: int | None = None,
    ) -> Path:
        final = self.path_for(checked_sha256(sha256), suffix)
        if final.is_file():
            return final
        self.root.mkdir(parents=True, exist_ok=True)
        partial = final.with_name(final.name + ".part")
        offset = partial.stat().st_size if partial.exists() else 0
        with partial.open("ab") as handle:
            async for chunk_offset, data in fetch(offset):
                if chunk_offset != offset:
                    raise CacheError("the coordinator sent a chunk at the wrong offset")
                if size_bytes and offset + len(data) > size_bytes:
                    handle.close()
                    partial.unlink()
                    raise CacheError(
                        f"the coordinator sent more than the model's declared {size_bytes} "
                        "bytes; the download was deleted"
                    )
                handle.write(data)
                offset += len(data)
        if digest(partial) != sha256:
            partial.unlink()
            raise CacheError(f"downloaded model does not match its sha256 {sha256}; deleted")
        os.replace(partial, final)
        return final
