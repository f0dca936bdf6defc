"""Model files on the coordinator, content-addressed by sha256."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

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

    async def receive(self, sha256: str, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
        """Writes an upload to a temporary file while hashing it, and moves it into place
        only if its hash is the one announced. Returns its size."""
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
            if digest.hexdigest() != sha256:
                raise ArtifactError("upload does not match its sha256; nothing was stored")
            os.replace(partial, final)
            return size
        finally:
            partial.unlink(missing_ok=True)
