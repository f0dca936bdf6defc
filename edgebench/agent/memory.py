"""Peak memory of this process over one run: resident (RAM) and on NVIDIA GPUs.

Linux keeps the peak (VmHWM) per process and lets a process reset it by writing "5"
to /proc/self/clear_refs, so each run gets its own peak, not the process lifetime's.
Where that is not possible the lifetime peak from getrusage is used.
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path
from typing import Any

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


def gpu_memory_mb(nvml: Any, pid: int | None = None) -> float | None:
    """Device memory this process holds on NVIDIA GPUs, as NVML (and nvidia-smi) count it:
    the engine's buffers plus the CUDA context. Read after a run it is the run's peak,
    because CUDA allocators (ggml's buffers, ONNX Runtime's arena, torch's cache) keep what
    they reached. None when NVML is unavailable or cannot attribute memory to processes
    (some containers), so an unknown figure is never reported as zero."""
    if nvml is None:
        return None
    pid = os.getpid() if pid is None else pid
    try:
        nvml.nvmlInit()
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        processes = [p for h in handles for p in nvml.nvmlDeviceGetComputeRunningProcesses(h)]
    except Exception:  # no driver or no GPU: NVML raises its own error types
        return None
    ours = [p.usedGpuMemory for p in processes if p.pid == pid]
    if not ours or any(used is None for used in ours):
        return None
    return float(sum(ours)) / 2**20
