"""A stand-in for the model's runner that tests can script: hold it, poison it, starve it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from live_servers import TINY_CLASSES

from preprocessing.features import FeatureConfig
from service.context import ModelCard
from service.engine import BatchOutput, OutOfMemory
from service.metrics import ServiceMetrics

# What a service around a ScriptedRunner says it serves.
CARD = ModelCard(
    version="scripted-1",
    backend="mha",
    norm="rmsnorm",
    classes=TINY_CLASSES,
    model_config={},
    feature_config=FeatureConfig(nfft=64, hop=32),
    device="cpu",
    precision="float32",
    path=Path("/nonexistent"),
)


def make_metrics(max_batch: int = 4, device: str = "cpu") -> ServiceMetrics:
    """The metrics of a test's engine: mha, a 30 ms budget, the v1 and v2 classify routes."""
    return ServiceMetrics(
        backend="mha",
        model_version="test",
        device=device,
        precision="float32",
        budget_s=0.03,
        max_batch=max_batch,
        routes=["/v1/classify", "/v2/models/{name}/infer"],
    )


def frame(n: int, tag: float = 0.0) -> np.ndarray:
    """A frame whose first sample carries `tag`, so a runner's answer can be traced back."""
    iq = np.zeros(n, dtype=np.complex64)
    iq[0] = tag
    return iq


class ScriptedRunner:
    """Answers each frame with its tag in column 0 and records the tags of every batch it
    computes; can be held at its door, fail on a poisoned tag (or always), run out of memory
    above a batch size, or take `seconds_per_batch` plus `seconds_per_frame` like a device."""

    def __init__(
        self, n_classes: int = 5, seconds_per_frame: float = 0.0, seconds_per_batch: float = 0.0
    ):
        self.n_classes = n_classes
        self.seconds_per_frame = seconds_per_frame
        self.seconds_per_batch = seconds_per_batch
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)
        self.batches: list[list[float]] = []
        self.poison: set[float] = set()
        self.broken = False
        self.max_frames_in_memory: int | None = None

    def reset(self) -> None:
        """Forget the calls so far (the warm-up's); only while the runner is idle."""
        self.entered = threading.Semaphore(0)
        self.batches.clear()

    def run(self, frames):
        self.entered.release()
        assert self.gate.wait(10), "runner held too long"
        if self.max_frames_in_memory is not None and len(frames) > self.max_frames_in_memory:
            raise OutOfMemory(f"{len(frames)} frames do not fit")
        time.sleep(self.seconds_per_batch + self.seconds_per_frame * len(frames))
        tags = [float(f[0].real) for f in frames]
        if self.broken or self.poison.intersection(tags):
            raise RuntimeError("injected fault")
        self.batches.append(tags)
        probabilities = np.zeros((len(frames), self.n_classes), dtype=np.float32)
        probabilities[:, 0] = tags
        signal = np.full((len(frames), 3), np.nan, dtype=np.float32)
        signal[:, 0] = tags  # so a test sees each frame's row come back to its own request
        return BatchOutput(probabilities, signal, preprocess_s=0.001, inference_s=0.002)
