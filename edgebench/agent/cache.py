"""The agent's model cache, content-addressed by sha256.

A download goes to `<sha>.part` and resumes from its size after an interruption; the
file is moved into place only once its hash is verified. A cached model is verified again
before each use unless it is unchanged since its last verification (a `.verified` mark
beside it holds its size and modification time; its own time is the entry's last use).
The cache keeps to a size limit by evicting the least recently used models, and a full
disk deletes the partial download and says so.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from edgebench.errors import EdgebenchError
from edgebench.modelfiles import file_sha256, tar_tree_sha256, unpack

# (offset) -> stream of (offset, data) chunks from the coordinator
Fetch = Callable[[int], AsyncIterator[tuple[int, bytes]]]


class CacheError(EdgebenchError, RuntimeError):
    pass


class DiskFull(CacheError):
    """No room for a model even with the cache emptied: the device, not the run."""


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def checked_sha256(sha256: str) -> str:
    """A model's name from the coordinator becomes a file name in the cache: only 64
    lowercase hex characters can (no path, no `..`)."""
    if not _SHA256.match(sha256):
        raise CacheError(f"the coordinator named a model {sha256[:80]!r}, which is not a sha256")
    return sha256


DEFAULT_MAX_BYTES = 20 * 1024**3  # agent run --cache-max-gb
DISK_MARGIN_BYTES = 256 * 1024**2  # left free beside a download (logs, the outbox)
MARK = ".verified"


class ModelCache:
    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes

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
            _mark(folder).touch()  # folders are verified as archives, before unpacking
            return folder
        # A folder's id is the hash of its files (tree_sha256), checked on the archive.
        archive = await self.ensure(
            sha256, fetch, suffix=".tar", digest=tar_tree_sha256, size_bytes=size_bytes
        )
        try:
            unpacked = unpack(archive, folder)
        finally:
            archive.unlink(missing_ok=True)  # the unpacked folder is what stays cached
            _mark(archive).unlink(missing_ok=True)
        _mark(unpacked).write_text("folder")
        return unpacked

    async def ensure(
        self,
        sha256: str,
        fetch: Fetch,
        suffix: str = ".gguf",
        digest: Callable[[Path], str] = file_sha256,
        size_bytes: int | None = None,
    ) -> Path:
        final = self.path_for(checked_sha256(sha256), suffix)
        if final.is_file() and self._still_verified(final, sha256, digest):
            return final
        self.root.mkdir(parents=True, exist_ok=True)
        partial = final.with_name(final.name + ".part")
        offset = partial.stat().st_size if partial.exists() else 0
        self.make_room(max(0, (size_bytes or 0) - offset), keep=final)
        try:
            await self._download(partial, fetch, offset, size_bytes)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            partial.unlink(missing_ok=True)
            raise DiskFull(
                f"the disk under {self.root} is full: the download was deleted"
            ) from None
        if digest(partial) != sha256:
            partial.unlink()
            raise CacheError(f"downloaded model does not match its sha256 {sha256}; deleted")
        os.replace(partial, final)
        _remember_verified(final)
        return final

    async def _download(
        self, partial: Path, fetch: Fetch, offset: int, size_bytes: int | None
    ) -> None:
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

    def _still_verified(self, final: Path, sha256: str, digest: Callable[[Path], str]) -> bool:
        """True when the cached file is the one last verified, or hashes right now; a file
        that does not is deleted (it is downloaded again)."""
        if _mark(final).is_file() and _mark(final).read_text() == _fingerprint(final):
            _mark(final).touch()  # its last use, for eviction
            return True
        if digest(final) == sha256:
            _remember_verified(final)
            return True
        final.unlink()
        _mark(final).unlink(missing_ok=True)
        return False

    def make_room(self, incoming: int, keep: Path | None = None) -> None:
        """Evicts the least recently used models until `incoming` more bytes fit within
        the size limit and the free disk (never `keep`, the model about to be used)."""
        entries = sorted(self._entries(), key=lambda entry: entry[0])
        used = sum(size for _, size, _ in entries)
        free = shutil.disk_usage(self.root).free
        for _, size, path in entries:
            if used + incoming <= self.max_bytes and incoming + DISK_MARGIN_BYTES <= free:
                return
            if path == keep:
                continue
            _remove(path)
            used, free = used - size, free + size
        if incoming + DISK_MARGIN_BYTES > free:
            raise DiskFull(
                f"not enough free disk under {self.root} for a {incoming / 1024**2:.0f} MiB "
                f"model ({free / 1024**2:.0f} MiB free after emptying the cache)"
            )

    def _entries(self) -> list[tuple[float, int, Path]]:
        """(last use, bytes, path) of every cached model."""
        found = []
        for path in self.root.iterdir() if self.root.is_dir() else ():
            if path.name.endswith((MARK, ".part")):
                continue
            mark = _mark(path)
            used = mark.stat().st_mtime if mark.exists() else path.stat().st_mtime
            found.append((used, _size(path), path))
        return found


def _mark(path: Path) -> Path:
    return path.with_name(path.name + MARK)


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size} {stat.st_mtime_ns}"


def _remember_verified(path: Path) -> None:
    _mark(path).write_text(_fingerprint(path))


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    _mark(path).unlink(missing_ok=True)
