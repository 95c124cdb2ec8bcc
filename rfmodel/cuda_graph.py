"""A computation captured into a CUDA graph, for the service's batches and the benchmarks.

At small batches a GPU forward waits on the host's kernel launches, not on the GPU (the
service's eager batch of one cost 6.7 ms on an H100, docs/benchmarks); a replay launches the
whole graph at once."""

from __future__ import annotations

from collections.abc import Callable

import torch


def cuda_graph(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """fn captured into a CUDA graph; the returned call replays it. The inputs fn reads are
    fixed tensors, so every replay recomputes from whatever they hold then, into the same output
    tensors."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # capture needs its allocations and cuFFT plans made already
        for _ in range(3):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # thread_local: the service captures in its worker thread while the event loop's thread
    # goes on (it makes no CUDA calls, but a global capture would fail on any that did)
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        output = fn()

    def replay() -> object:
        graph.replay()
        return output  # the same tensor each time, overwritten by every replay

    return replay
