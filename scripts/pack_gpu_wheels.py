"""Pack onnxruntime-gpu (and other wheels) small enough to carry to a lent GPU machine.

The workplace's device tool carries at most 64 MiB a call, and onnxruntime-gpu's wheel is
about 255 MB, most of it GPU code for every architecture from sm_75 to sm_120. This
unpacks the wheels, zeroes the GPU code of every architecture but the one kept (the
fatbin entry headers stay, so the CUDA runtime still finds the kept entries), packs the
result with zstd and splits it into parts that each fit one call. On the machine:
`cat part-* | zstd -d --long=28 | tar -x -C DIR`, then put DIR's packages first on
PYTHONPATH. Used in session 9 on an H200 (NOTES.md); needs the `zstd` command here.

Usage: python scripts/pack_gpu_wheels.py OUT_DIR WHEEL... [--arch 90] [--part-mb 40]
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import tempfile
import zipfile
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50
ELF_MAGIC = b"\x7fELF"


def section(data: bytes | bytearray, name: bytes) -> tuple[int, int] | None:
    """(file offset, size) of a 64-bit little-endian ELF file's section `name`."""
    if data[:4] != ELF_MAGIC or data[4] != 2 or data[5] != 1:
        return None
    shoff, = struct.unpack_from("<Q", data, 0x28)  # fmt: skip
    entsize, count, names_index = struct.unpack_from("<HHH", data, 0x3A)
    names_offset = struct.unpack_from("<Q", data, shoff + names_index * entsize + 0x18)[0]
    for index in range(count):
        header = shoff + index * entsize
        name_at = names_offset + struct.unpack_from("<I", data, header)[0]
        if data[name_at : name_at + len(name) + 1] == name + b"\0":
            offset, size = struct.unpack_from("<QQ", data, header + 0x18)
            return offset, size
    return None


def zero_other_archs(data: bytearray, start: int, size: int, keep: int) -> int:
    """Zero the payload of each fatbin entry not built for sm_`keep`; returns bytes zeroed."""
    position, end, zeroed = start, start + size, 0
    while position + 16 <= end:
        magic, _, header_size, fat_size = struct.unpack_from("<IHHQ", data, position)
        if magic != FATBIN_MAGIC:
            position += 8  # blobs are 8-byte aligned
            continue
        entry, blob_end = position + header_size, position + header_size + fat_size
        while entry < blob_end:
            _, _, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            arch = struct.unpack_from("<I", data, entry + 28)[0]
            if arch != keep:
                body = entry + entry_header
                data[body : body + payload] = bytes(payload)
                zeroed += payload
            entry += entry_header + payload
        position = blob_end
    return zeroed


def shrink_libraries(root: Path, keep: int) -> None:
    for library in sorted(root.rglob("*.so*")):
        data = bytearray(library.read_bytes())
        found = section(data, b".nv_fatbin")
        if found is None:
            continue
        zeroed = zero_other_archs(data, *found, keep)
        library.write_bytes(data)
        print(f"{library.relative_to(root)}: {zeroed >> 20} MiB of other GPU code zeroed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("wheels", type=Path, nargs="+")
    parser.add_argument("--arch", type=int, default=90, help="the sm_ architecture kept")
    parser.add_argument("--part-mb", type=int, default=40)
    args = parser.parse_args()
    if shutil.which("zstd") is None:
        parser.error("needs the zstd command")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "site"
        for wheel in args.wheels:
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(root)
        shrink_libraries(root, args.arch)
        packed = Path(tmp) / "site.tar.zst"
        tar = subprocess.Popen(["tar", "-C", str(root), "-cf", "-", "."], stdout=subprocess.PIPE)
        subprocess.run(["zstd", "-q", "-19", "-T0", "--long=28", "-o", str(packed)],
                       stdin=tar.stdout, check=True)  # fmt: skip
        if tar.wait() != 0:
            raise SystemExit("tar failed")
        blob, step = packed.read_bytes(), args.part_mb << 20
        for index in range(0, len(blob), step):
            (args.out / f"part-{index // step:02d}").write_bytes(blob[index : index + step])
    print(f"{len(blob) >> 20} MiB in {-(-len(blob) // step)} parts under {args.out}")


if __name__ == "__main__":
    main()
