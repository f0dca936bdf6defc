"""What the running agent last said about itself, for `edgebench agent status` on the
device: a small JSON file in its data dir, rewritten on each change (connected or not,
the run it holds, its last error). The reader adds what it can see itself: whether that
agent process is still alive, the outbox depth, the model cache's size."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgebench import __version__, paths

STATUS_FILE = "agent-status.json"


def status_path() -> Path:
    return paths.data_dir() / STATUS_FILE


def record(**changes: Any) -> None:
    """Merges `changes` into the status file (never fails the agent)."""
    try:
        current = read()
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        current.update(changes, pid=os.getpid(), version=__version__, updated_at=now)
        paths.write_private(status_path(), json.dumps(current, indent=2) + "\n")
    except OSError:
        pass


def read() -> dict[str, Any]:
    try:
        loaded = json.loads(status_path().read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
