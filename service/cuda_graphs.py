"""Equal-length batches replayed from CUDA graphs, one graph per frame length and batch-size bucket.

Eager, a batch on an H100 cost 6.7 ms for one frame and 7.7 ms for eight: nearly all of it the
host launching kernels (docs/benchmarks/batching-cuda-h100-2026-12-06.md). Replayed from a graph
the whole batch is one launch. A graph has fixed shapes, so it serves one frame length, and a
batch is padded up to its bucket: the rows past the batch keep an earlier batch's frames, which
are computed and thrown away (rows never meet: the model has no batch statistics)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rfmodel.cuda_graph import cuda_graph

log = logging.getLogger(__name__)

Capture = Callable[[Callable[[], Tensor], torch.device], Callable[[], Tensor]]


@dataclass(frozen=True)
class _Graph:
    iq: Tensor  # [size, n_samples] complex64, the graph's input, written before each replay
    replay: Callable[[], Tensor]  # -> [size, C]


class GraphedBatches:
    def __init__(
        self,
        forward: Callable[[Tensor], Tensor],
        lengths: Sequence[int],
        sizes: Sequence[int],
        device: torch.device,
        capture: Capture = cuda_graph,
    ):
        """forward: iq [B, N] -> [B, C] on device. lengths: the frame lengths N served; sizes:
        the batch-size buckets. Each (length, bucket) is captured on its first batch (the
        engine's warm-up runs every one)."""
        self._forward = forward
        self.lengths = frozenset(lengths)
        self._sizes = sorted(sizes)
        self._device = device
        self._capture = capture
        # (length, bucket) -> graph; None: capture failed, the batch runs eager
        self._graphs: dict[tuple[int, int], _Graph | None] = {}

    def run(self, iq: np.ndarray) -> Tensor | None:
        """iq [B, N] complex64 -> forward's [B, C] on the device, or None for a batch no graph
        serves (another length, larger than every bucket, or its capture failed)."""
        batch, n_samples = iq.shape
        size = next((s for s in self._sizes if s >= batch), None)
        if n_samples not in self.lengths or size is None:
            return None
        key = (n_samples, size)
        if key not in self._graphs:
            self._graphs[key] = self._try_capture(*key)
        graph = self._graphs[key]
        if graph is None:
            return None
        graph.iq[:batch].copy_(torch.from_numpy(iq))
        return graph.replay()[:batch]

    def _try_capture(self, n_samples: int, size: int) -> _Graph | None:
        # finite frames for the capture's runs, and for the padding rows until real ones arrive
        generator = torch.Generator(self._device).manual_seed(0)
        shape = (size, n_samples)
        iq = torch.randn(shape, dtype=torch.complex64, device=self._device, generator=generator)
        start = time.perf_counter()
        try:
            replay = self._capture(lambda: self._forward(iq), self._device)
        except Exception as exc:  # any failure leaves the batch to the eager path, not an error
            log.warning(
                "no CUDA graph for batches of %d frames of %d samples (%s); they run eagerly",
                size,
                n_samples,
                exc,
            )
            return None
        log.info(
            "CUDA graph for batches of %d frames of %d samples captured in %.2f s",
            size,
            n_samples,
            time.perf_counter() - start,
        )
        return _Graph(iq, replay)
