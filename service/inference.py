"""The device side of the engine: features and model for one batch, under torch.inference_mode.

The only service module that touches torch. Preprocessing runs on the same device as the model
so a GPU does the FFTs too, and only the [B, C] probabilities come back to the host.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from preprocessing.features import FeatureConfig, batch_features
from preprocessing.recording import batch_recording_features
from rfmodel.classifier import RFClassifier
from rfmodel.iq_logits import iq_logits
from service.engine import BatchOutput, OutOfMemory


class DeviceError(Exception):
    """The device asked for cannot be used here."""


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise DeviceError("RFCLS_DEVICE=cuda, but torch sees no CUDA device on this machine")
    return torch.device(choice)


class TorchRunner:
    def __init__(self, model: RFClassifier, feature_config: FeatureConfig, device: torch.device):
        self.model = model.to(device).eval()
        self.feature_config = feature_config
        self.device = device

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
            iq = torch.from_numpy(np.stack(frames)).to(self.device)  # [B, N] complex64
            logits = iq_logits(self.model, iq, self.feature_config, features_done)  # [B, C]
        else:
            tensors = [torch.from_numpy(f).to(self.device) for f in frames]
            x, mask = batch_features(tensors, self.feature_config)  # [B, Tmax, F], [B, Tmax]
            recording = batch_recording_features(tensors, self.feature_config)
            features_done()
            logits = self.model(x, mask, recording)
        probabilities = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        t2 = time.perf_counter()
        t1 = preprocessed[0]
        return BatchOutput(probabilities, preprocess_s=t1 - t0, inference_s=t2 - t1)

    def _synchronize(self) -> None:
        # only so the preprocess/inference split in the metrics is true on a GPU; the current
        # stream alone, so the recording's features (iq_logits' second stream) go on beside
        # the model, and count as inference where they outlast the frame features
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
