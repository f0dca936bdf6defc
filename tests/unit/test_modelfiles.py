import tarfile
from pathlib import Path

import pytest

from edgebench.engines import EngineError, detect_format
from edgebench.modelfiles import (
    ModelFileError,
    check_tar,
    pack_folder,
    tar_tree_sha256,
    tree_sha256,
    unpack,
)


def _folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text("{}")
    (root / "sub" / "weights.bin").write_bytes(b"\x00" * 100)
    return root


def test_folder_id_is_the_same_from_the_folder_and_its_archive(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "model")
    archive = tmp_path / "a.tar"
    pack_folder(folder, archive)
    assert detect_format(folder) == "hf" and check_tar(archive) == "hf"
    assert tar_tree_sha256(archive) == tree_sha256(folder)
    pack_folder(folder, tmp_path / "b.tar")  # deterministic bytes
    assert (tmp_path / "b.tar").read_bytes() == archive.read_bytes()
    out = unpack(archive, tmp_path / "out")
    assert tree_sha256(out) == tree_sha256(folder)


def test_unsafe_or_unknown_archives_are_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        payload = tmp_path / "x"
        payload.write_text("{}")
        tar.add(payload, arcname="../config.json")
    with pytest.raises(ModelFileError, match="unsafe entry"):
        unpack(evil, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "config.json").exists()
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 64)
    with pytest.raises(ModelFileError, match="not a model folder archive"):
        check_tar(tmp_path / "junk.tar")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EngineError, match="neither"):
        detect_format(tmp_path / "empty")


def test_an_onnx_export_is_onnx_though_it_keeps_the_transformers_config(tmp_path: Path) -> None:
    """Optimum's layout: config.json beside model.onnx. The folder and its archive agree."""
    folder = _folder(tmp_path / "export")
    (folder / "model.onnx").write_bytes(b"\x08\x07")
    pack_folder(folder, tmp_path / "export.tar")
    assert detect_format(folder) == "onnx" and check_tar(tmp_path / "export.tar") == "onnx"
    (folder / "model.onnx").unlink()
    (folder / "genai_config.json").write_text("{}")
    assert detect_format(folder) == "onnx"
