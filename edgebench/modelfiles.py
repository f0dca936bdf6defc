"""Model files as artifacts: a GGUF travels as it is; a model folder (ONNX or
transformers) travels as a deterministic tar, so the same folder always has the same
sha256. Used by the CLI (packing), the coordinator (checking) and the agent (unpacking)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from edgebench.engines import EngineError, folder_format
from edgebench.errors import EdgebenchError

MAX_MEMBERS = 10_000


class ModelFileError(EdgebenchError, ValueError):
    pass


def pack_folder(folder: Path, dest: Path) -> None:
    """A tar of the folder's regular files, sorted, with fixed owners and times."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for item in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
            info = tarfile.TarInfo(item.relative_to(folder).as_posix())
            info.size = item.stat().st_size
            info.mode = 0o644
            with item.open("rb") as handle:
                tar.addfile(info, handle)


def check_tar(path: Path) -> str:
    """The format of a packed model folder, after checking every member is a plain file
    with a safe relative name."""
    try:
        with tarfile.open(path, "r:") as tar:
            names = set()
            for count, member in enumerate(tar, 1):
                _check_member(member)
                if count > MAX_MEMBERS:
                    raise ModelFileError("model folder has too many files")
                if "/" not in member.name:
                    names.add(member.name)
    except tarfile.TarError as exc:
        raise ModelFileError(f"not a model folder archive: {exc}") from None
    try:
        return folder_format(names, "the upload")
    except EngineError as exc:
        raise ModelFileError(str(exc)) from None


def _check_member(member: tarfile.TarInfo) -> None:
    name = PurePosixPath(member.name)
    if not member.isfile() or name.is_absolute() or ".." in name.parts or not name.parts:
        raise ModelFileError(f"unsafe entry in model archive: {member.name!r}")


def unpack(path: Path, dest: Path) -> Path:
    """Extracts a checked model archive into `dest` (atomically: all files or none)."""
    check_tar(path)
    partial = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
    partial.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            target = partial / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is None:
                raise ModelFileError(f"cannot read {member.name!r} from the model archive")
            with target.open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
    os.replace(partial, dest)
    return dest


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def tree_sha256(path: Path) -> str:
    """sha256 of a model file, or of a model folder: over its files' relative paths and
    contents in sorted order, so the same folder always gives the same id."""
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{item.relative_to(path).as_posix()}\0{file_sha256(item)}\n".encode())
    return digest.hexdigest()


def tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tar_tree_sha256(path: Path) -> str:
    """tree_sha256 of the folder a model archive unpacks to, computed from the archive."""
    entries = []
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            _check_member(member)
            source = tar.extractfile(member)
            if source is None:
                raise ModelFileError(f"cannot read {member.name!r} from the model archive")
            digest = hashlib.sha256()
            while block := source.read(1 << 20):
                digest.update(block)
            entries.append((PurePosixPath(member.name), digest.hexdigest()))
    tree = hashlib.sha256()
    for name, file_hash in sorted(entries):
        tree.update(f"{name.as_posix()}\0{file_hash}\n".encode())
    return tree.hexdigest()
