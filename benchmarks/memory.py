"""Peak memory of a piece of work: `torch.cuda.max_memory_allocated` on a GPU, the growth of the
process's peak resident set (VmHWM) on the CPU. The CPU peak is per process, so each measured
point runs in its own process (benchmarks.isolation) and resets the peak before the work."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable
from pathlib import Path

import torch

PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")
RESET_PEAK_RSS = "5"  # proc(5): writing 5 to clear_refs resets VmHWM to the current RSS


def proc_status_bytes(field: str) -> int:
    for line in PROC_STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"{PROC_STATUS} has no {field} line")


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS, so that RSS left over from earlier work does not
    hide the growth of the next measurement."""
    gc.collect()
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        libc = ctypes.CDLL(libc_name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)


def peak_growth_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak memory above what was in use just before `fn`, while `fn` runs."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    release_freed_memory()
    PROC_CLEAR_REFS.write_text(RESET_PEAK_RSS)
    before = proc_status_bytes("VmRSS")
    fn()
    return max(0, proc_status_bytes("VmHWM") - before)
