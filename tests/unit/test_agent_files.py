"""The agent's files: credential (0600), outbox that survives a restart, model cache."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edgebench.agent import credentials
from edgebench.agent.cache import CacheError, ModelCache
from edgebench.agent.outbox import Outbox


def test_credential_is_private_and_missing_one_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEBENCH_HOME", str(tmp_path))
    with pytest.raises(credentials.NotEnrolled, match="agent enroll"):
        credentials.load()
    saved = credentials.Credential("127.0.0.1:1", "id", "secret", "dev", "name")
    path = credentials.save(saved)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert credentials.load() == saved
    path.write_text("{not json")
    with pytest.raises(credentials.NotEnrolled, match="damaged"):
        credentials.load()


def test_outbox_keeps_results_until_removed_across_reopen(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite")
    box.add("r1", "run1", b"one")
    box.add("r2", "run2", b"two")
    box.add("r1", "run1", b"one")  # the same result again stays one entry
    box.close()
    reopened = Outbox(tmp_path / "outbox.sqlite")
    assert reopened.pending() == [("r1", b"one"), ("r2", b"two")]
    reopened.remove("r1")
    assert len(reopened) == 1


def test_a_corrupt_outbox_file_is_moved_aside_and_the_agent_starts_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with caplog.at_level("WARNING", "edgebench.agent"):
        box = Outbox(path)
    assert len(box) == 0 and box.pending() == []
    (aside,) = tmp_path.glob("outbox.sqlite.corrupt-*")
    assert aside.read_bytes().startswith(b"this is not a database")
    assert "is unreadable" in caplog.text and "moved to" in caplog.text
    box.add("r1", "run1", b"one")
    assert box.pending() == [("r1", b"one")]


def test_a_row_that_cannot_be_sent_is_set_aside_with_its_reason(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite")
    box.add("r1", "run1", b"one")
    box.add("r2", "run2", b"two")
    box._db.execute("UPDATE outbox SET payload = 'text, not bytes' WHERE result_id = 'r2'")
    assert box.pending() == [("r1", b"one")]  # r2 set aside, not sent
    box.set_aside("r1", "refused (INVALID_ARGUMENT): decode_tps disagrees")
    assert len(box) == 0 and box.set_aside_count() == 2
    reasons = dict(box._db.execute("SELECT result_id, reason FROM set_aside").fetchall())
    assert reasons == {"r1": "refused (INVALID_ARGUMENT): decode_tps disagrees",
                       "r2": "its payload is not bytes"}  # fmt: skip


def _source(data: bytes, fail_after: int | None = None):
    calls: list[int] = []

    async def fetch(offset: int) -> AsyncIterator[tuple[int, bytes]]:
        calls.append(offset)
        for start in range(offset, len(data), 4):
            if fail_after is not None and start >= fail_after and len(calls) == 1:
                raise ConnectionError("cable pulled")
            yield start, data[start : start + 4]

    return fetch, calls


def test_cache_resumes_a_broken_download_and_verifies_it(tmp_path: Path) -> None:
    data = b"GGUF" + bytes(range(60))
    sha = hashlib.sha256(data).hexdigest()
    cache = ModelCache(tmp_path)
    fetch, calls = _source(data, fail_after=20)
    with pytest.raises(ConnectionError):
        asyncio.run(cache.ensure(sha, fetch))
    path = asyncio.run(cache.ensure(sha, fetch))
    assert calls == [0, 20] and path.read_bytes() == data
    assert asyncio.run(cache.ensure(sha, fetch)) == path and calls == [0, 20]  # cached


def test_cache_deletes_a_download_with_the_wrong_hash(tmp_path: Path) -> None:
    fetch, _ = _source(b"GGUF tampered")
    cache = ModelCache(tmp_path)
    with pytest.raises(CacheError, match="does not match"):
        asyncio.run(cache.ensure("0" * 64, fetch))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "/etc/hostname", "A" * 64, "0" * 63, "0" * 64 + "/x", ""]
)
def test_a_model_named_by_anything_but_a_sha256_is_refused(tmp_path: Path, name: str) -> None:
    """The name becomes a path in the cache: nothing outside it is read or written."""
    outside = tmp_path / "outside.gguf"
    outside.write_bytes(b"GGUF planted")
    fetch, calls = _source(b"GGUF" + bytes(10))
    cache = ModelCache(tmp_path / "cache")
    for fmt in ("gguf", "hf"):
        with pytest.raises(CacheError, match="which is not a sha256"):
            asyncio.run(cache.ensure_model(name or str(outside), fmt, fetch))
    assert calls == [] and not (tmp_path / "cache").exists()


def test_a_download_stops_at_the_declared_size(tmp_path: Path) -> None:
    data = b"GGUF" + bytes(range(200))
    fetch, _ = _source(data)
    cache = ModelCache(tmp_path)
    sha = hashlib.sha256(data).hexdigest()
    with pytest.raises(CacheError, match="more than the model's declared 10 bytes"):
        asyncio.run(cache.ensure_model(sha, "gguf", fetch, size_bytes=10))
    assert list(tmp_path.iterdir()) == []  # the partial file is gone
    assert asyncio.run(cache.ensure_model(sha, "gguf", fetch, size_bytes=len(data))).is_file()


def _model(seed: int) -> tuple[bytes, str]:
    data = b"GGUF" + bytes([seed]) * 60
    return data, hashlib.sha256(data).hexdigest()


def test_a_cached_model_changed_on_disk_is_verified_again_and_fetched(tmp_path: Path) -> None:
    data, sha = _model(1)
    cache = ModelCache(tmp_path)
    fetch, calls = _source(data)
    path = asyncio.run(cache.ensure(sha, fetch))
    path.write_bytes(b"GGUF" + bytes(60))  # tampered: same size, new modification time
    assert asyncio.run(cache.ensure(sha, fetch)).read_bytes() == data
    assert calls == [0, 0]  # fetched again after the check failed
    assert asyncio.run(cache.ensure(sha, fetch)) == path and calls == [0, 0]


def test_the_cache_keeps_its_size_by_evicting_the_least_recently_used(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path, max_bytes=150)  # room for two 64-byte models
    models = [_model(seed) for seed in (1, 2, 3)]
    paths = []
    for moment, (data, sha) in enumerate(models[:2]):
        paths.append(asyncio.run(cache.ensure(sha, _source(data)[0], size_bytes=len(data))))
        mark = paths[-1].with_name(paths[-1].name + ".verified")
        os.utime(mark, (1000 + moment, 1000 + moment))  # first used long ago
    asyncio.run(cache.ensure(models[0][1], _source(models[0][0])[0]))  # the first, used now
    data, sha = models[2]
    third = asyncio.run(cache.ensure(sha, _source(data)[0], size_bytes=len(data)))
    assert paths[0].is_file() and third.is_file()
    assert not paths[1].exists()  # the least recently used went
    assert not paths[1].with_name(paths[1].name + ".verified").exists()


def test_a_full_disk_deletes_the_partial_download(tmp_path: Path) -> None:
    data, sha = _model(4)
    cache = ModelCache(tmp_path)
    (tmp_path / f"{sha}.gguf.part").symlink_to("/dev/full")  # the kernel answers ENOSPC
    with pytest.raises(CacheError, match="is full: the download was deleted"):
        asyncio.run(cache.ensure(sha, _source(data)[0]))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CacheError, match="not enough free disk"):
        asyncio.run(cache.ensure(sha, _source(data)[0], size_bytes=1 << 60))
