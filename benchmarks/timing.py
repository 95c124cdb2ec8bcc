"""Timed calls on CPU or CUDA: a warm-up call, then per-call times, with CUDA events and a device
synchronisation on a GPU so the times cover the kernels and not just their launch."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds for one call, device work included."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    start_s = time.perf_counter()
    fn()
    return time.perf_counter() - start_s


def time_calls(
    fn: Callable[[], object],
    device: torch.device,
    max_repeats: int,
    min_repeats: int,
    budget_s: float,
    warmups: int = 1,
) -> list[float]:
    """Per-call seconds after `warmups` untimed calls: at least `min_repeats` calls, then more up
    to `max_repeats` while the timed calls so far stay within `budget_s`."""
    for _ in range(warmups):
        fn()
    synchronize(device)
    seconds: list[float] = []
    while len(seconds) < max_repeats and (len(seconds) < min_repeats or sum(seconds) < budget_s):
        seconds.append(time_once(fn, device))
    return seconds


def summarize_ms(seconds: list[float]) -> dict[str, float | int]:
    """p50 (median) and p99 in milliseconds, and how many calls they come from. With fewer than
    100 calls p99 is the interpolated top of the sample, close to its maximum."""
    ms = np.asarray(seconds) * 1e3
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "repeats": len(seconds),
    }
