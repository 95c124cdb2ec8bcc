"""The device side of the engine: features, model and the frames' occupied band
(preprocessing.occupancy) for one batch, under torch.inference_mode.

With service/cuda_graphs.py the only service modules that touch torch. Preprocessing runs on the
same device as the model so a GPU does the FFTs too, and only the [B, C] probabilities and the
[B, 3] measurements come back to the host.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from preprocessing.features import FeatureConfig, batch_features
from preprocessing.occupancy import occupied_band
from preprocessing.recording import batch_recording_features
from rfmodel.classifier import RFClassifier
from rfmodel.iq_logits import beside, iq_logits
from service.cuda_graphs import GraphedBatches
from service.engine import BatchOutput, OutOfMemory


class DeviceError(Exception):
    """The device asked for cannot be used here."""


def resolve_precision(choice: str, device: torch.device) -> torch.dtype:
    """RFCLS_PRECISION -> the model's dtype on device. auto picks bfloat16 only where it was
    measured to pay: on a CPU with native bf16 its matmuls run at twice the float32 rate, while a
    GPU's float32 batch replayed from a CUDA graph is bound by its launches, not its matmuls."""
    if choice == "auto":
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return torch.bfloat16 if device.type == "cpu" and native else torch.float32
    return getattr(torch, choice)


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise DeviceError("RFCLS_DEVICE=cuda, but torch sees no CUDA device on this machine")
    return torch.device(choice)


class TorchRunner:
    def __init__(
        self,
        model: RFClassifier,
        feature_config: FeatureConfig,
        device: torch.device,
        *,
        dtype: torch.dtype = torch.float32,
        graph_lengths: Sequence[int] = (),
        graph_batch_sizes: Sequence[int] = (),
    ):
        """dtype: the model's (features are float32, then cast). graph_lengths: on CUDA,
        batches of frames of these lengths (samples) are replayed from CUDA graphs, one per
        length and batch size in graph_batch_sizes (a batch runs padded to the next)."""
        self.model = model.to(device=device, dtype=dtype).eval()
        self.dtype = dtype
        self.feature_config = feature_config
        self.device = device
        self.graphs = None
        if device.type == "cuda" and graph_lengths and graph_batch_sizes:
            self.graphs = GraphedBatches(
                self._probabilities, graph_lengths, graph_batch_sizes, device
            )

    def _probabilities(
        self, iq: torch.Tensor, features_done: Callable[[], None] = lambda: None
    ) -> torch.Tensor:
        logits = iq_logits(self.model, iq, self.feature_config, features_done)  # [B, C]
        return torch.softmax(logits.float(), dim=-1)

    def run(self, frames: Sequence[np.ndarray]) -> BatchOutput:
        try:
            return self._run(frames)
        except torch.OutOfMemoryError as exc:
            message = str(exc)
        # raised outside the except block: the traceback, and with it the failed attempt's
        # tensors, is gone before the engine retries with a smaller batch
        raise OutOfMemory(message)

    @torch.inference_mode()
    def _run(self, frames: Sequence[np.ndarray]) -> BatchOutput:
        t0 = time.perf_counter()
        preprocessed: list[float] = []

        def features_done() -> None:
            self._synchronize()
            preprocessed.append(time.perf_counter())

        if len({len(f) for f in frames}) == 1:
            # equal lengths, the common case: one stacked copy, no padding, no mask
            stacked = np.stack(frames)  # [B, N] complex64
            if self.graphs is not None and (graphed := self._run_graphed(stacked, t0)):
                return graphed
            iq = torch.from_numpy(stacked).to(self.device)
            measured = beside(lambda: occupied_band(iq), self.device)
            probabilities = self._probabilities(iq, features_done)  # [B, C]
            signal = measured()  # [B, 3]
        else:
            tensors = [torch.from_numpy(f).to(self.device) for f in frames]
            x, mask = batch_features(tensors, self.feature_config)  # [B, Tmax, F], [B, Tmax]
            recording = batch_recording_features(tensors, self.feature_config)
            features_done()
            logits = self.model(x.to(self.dtype), mask, recording)
            probabilities = torch.softmax(logits.float(), dim=-1)
            signal = torch.cat([occupied_band(t[None]) for t in tensors])
        probabilities, signal = probabilities.cpu().numpy(), signal.cpu().numpy()
        t2 = time.perf_counter()
        t1 = preprocessed[0]
        return BatchOutput(probabilities, signal, preprocess_s=t1 - t0, inference_s=t2 - t1)

    def _run_graphed(self, iq: np.ndarray, t0: float) -> BatchOutput | None:
        """The features run inside the graph, so they count as inference; preprocessing is
        the frames' stacking and copy to the device."""
        probabilities = self.graphs.run(iq)
        if probabilities is None:
            return None
        t1 = time.perf_counter()  # the copy in is synchronous, the replay only launched
        # the measurements run eagerly beside the replay: small, and the same for any batch size
        signal = occupied_band(torch.from_numpy(iq).to(self.device)).cpu().numpy()
        out = probabilities.cpu().numpy()
        return BatchOutput(out, signal, preprocess_s=t1 - t0, inference_s=time.perf_counter() - t1)

    def _synchronize(self) -> None:
        # only so the preprocess/inference split in the metrics is true on a GPU; the current
        # stream alone, so the recording's features (iq_logits' second stream) go on beside
        # the model, and count as inference where they outlast the frame features
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
