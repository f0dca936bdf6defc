"""Peak resident memory of this process over one run.

Linux keeps the peak (VmHWM) per process and lets a process reset it by writing "5"
to /proc/self/clear_refs, so each run gets its own peak, not the process lifetime's.
Where that is not possible the lifetime peak from getrusage is used.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_PROC_SELF = Path("/proc/self")


def reset_peak_rss() -> bool:
    try:
        (_PROC_SELF / "clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    try:
        for line in (_PROC_SELF / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is KiB on Linux, bytes on macOS.
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0
