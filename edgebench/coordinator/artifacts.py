"""Model files on the coordinator, content-addressed by sha256."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

from edgebench.engines import GGUF_MAGIC
from edgebench.modelfiles import ModelFileError, check_tar, tar_tree_sha256

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
CHUNK_BYTES = 1 << 20


class ArtifactError(ValueError):
    pass


def check_sha256(value: str) -> str:
    if not SHA256_RE.match(value):
        raise ArtifactError("an artifact id must be 64 lowercase hex characters (a sha256)")
    return value


class ArtifactFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, sha256: str) -> Path:
        return self.root / check_sha256(sha256)

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    async def receive(
        self, sha256: str, chunks: AsyncIterator[bytes], max_bytes: int, fmt: str
    ) -> int:
        """Writes an upload to a temporary file while hashing it, checks its content is a
        model of `fmt` whose id is the one announced, and only then moves it into place.
        A model folder arrives as a tar; its id is the hash of its files (tree_sha256)."""
        final = self.path_for(sha256)
        self.root.mkdir(parents=True, exist_ok=True)
        partial = final.with_name(f"{sha256}.{os.getpid()}.{id(chunks)}.part")
        digest = hashlib.sha256()
        size = 0
        try:
            with partial.open("wb") as handle:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise ArtifactError(f"upload is larger than the limit of {max_bytes} bytes")
                    digest.update(chunk)
                    handle.write(chunk)
            if size == 0:
                raise ArtifactError("upload is empty")
            actual = digest.hexdigest() if fmt == "gguf" else await _folder_id(partial, fmt)
            if actual != sha256:
                raise ArtifactError("upload does not match its sha256; nothing was stored")
            if fmt == "gguf" and not _starts_with(partial, GGUF_MAGIC):
                raise ArtifactError("the upload is not a GGUF file")
            os.replace(partial, final)
            return size
        finally:
            partial.unlink(missing_ok=True)


def _starts_with(path: Path, magic: bytes) -> bool:
    with path.open("rb") as handle:
        return handle.read(len(magic)) == magic


async def _folder_id(archive: Path, fmt: str) -> str:
    try:
        found = await asyncio.to_thread(check_tar, archive)
        if found != fmt:
            raise ArtifactError(f"the upload is a {found} model folder, not {fmt}")
        return await asyncio.to_thread(tar_tree_sha256, archive)
    except ModelFileError as exc:
        raise ArtifactError(str(exc)) from None
