"""The committed stubs must be exactly what the .proto files generate."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "edgebench" / "proto" / "v1"


def test_generated_stubs_are_current(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = sorted(p.name for p in tmp_path.iterdir())
    assert fresh == sorted(p.name for p in COMMITTED.glob("agent_pb2*"))
    stale = [
        name for name in fresh if (tmp_path / name).read_text() != (COMMITTED / name).read_text()
    ]
    assert not stale, f"stale generated stubs {stale}: run python scripts/gen_protos.py"
