"""IQ to logits on one device: the model's features, then the model, as the service, the
evaluation and the benchmarks compute them.

The recording's features meet the frame features and the transformer only at the recording
head, so they run beside them: on a GPU on a second stream (at small batches neither fills the
GPU, so their kernels overlap instead of queueing behind each other), on the CPU on a second
thread when torch's intra-op threads leave a core free (as the service leaves one to its event
loop, which idles while a lone request computes). The logits are the same bit for bit."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor

from preprocessing.features import FeatureConfig, compute_features
from preprocessing.recording import recording_features
from rfmodel.classifier import RFClassifier
from rfmodel.cpus import usable_cpus

T = TypeVar("T")

_side_streams: dict[torch.device, torch.cuda.Stream] = {}
_side_thread = ThreadPoolExecutor(1, thread_name_prefix="rfcls-recording-features")


@dataclass(frozen=True)
class Stages:
    """The three computations iq_logits runs, eager by default."""

    frame_features: Callable[[Tensor, FeatureConfig], Tensor] = compute_features
    recording_features: Callable[[Tensor, FeatureConfig], Tensor | None] = recording_features
    sequence_logits: Callable[[RFClassifier, Tensor], Tensor] = RFClassifier.sequence_logits

    @classmethod
    def compiled(cls) -> Stages:
        """Each through torch.compile with fixed shapes (a compilation per input shape): for
        benchmarks of one shape, where fused elementwise kernels take a third off a GPU
        request's features (docs/benchmarks)."""
        stages = (compute_features, recording_features, RFClassifier.sequence_logits)
        return cls(*(torch.compile(stage, dynamic=False) for stage in stages))


EAGER = Stages()


def _side_stream(device: torch.device) -> torch.cuda.Stream:
    # one per device, made once: a CUDA graph may capture work on it, and streams are not free
    if device not in _side_streams:
        _side_streams[device] = torch.cuda.Stream(device)
    return _side_streams[device]


def _core_left_free() -> bool:
    return torch.get_num_threads() < usable_cpus()


def _on_side_thread(work: Callable[[], T]) -> Future[T]:
    # thread-local; grad mode needs no copy, as no feature stage has parameters
    inference = torch.is_inference_mode_enabled()

    def run() -> T:
        with torch.inference_mode(inference):
            return work()

    return _side_thread.submit(run)


def beside(work: Callable[[], T], device: torch.device) -> Callable[[], T]:
    """Start work that the logits do not need where iq_logits puts the recording's features: on
    the CPU, on its second thread when a core is free (ahead of the next call's features, which
    wait for the model anyway), else at once. Call the result for the work's value."""
    if device.type == "cpu" and _core_left_free():
        return _on_side_thread(work).result
    value = work()
    return lambda: value


def iq_logits(
    model: RFClassifier,
    iq: Tensor,
    features: FeatureConfig,
    features_done: Callable[[], None] = lambda: None,
    stages: Stages = EAGER,
) -> Tensor:
    """iq [B, N] complex64 on the model's device -> logits [B, C]. features_done is called once
    the frame features are queued (the service times preprocessing up to there)."""
    dtype = model.embed.weight.dtype
    side = _side_stream(iq.device) if iq.device.type == "cuda" else None
    if side is not None:
        side.wait_stream(torch.cuda.current_stream(iq.device))  # iq was written there
    if iq.device.type == "cpu" and _core_left_free():
        recording = _on_side_thread(lambda: stages.recording_features(iq, features))
    else:
        with torch.cuda.stream(side):  # None, on the CPU: no stream, a no-op
            recording = stages.recording_features(iq, features)  # [B, F] or None
    x = stages.frame_features(iq, features).to(dtype)  # [B, T, F]
    features_done()
    logits = stages.sequence_logits(model, x)  # [B, C]
    if isinstance(recording, Future):
        recording = recording.result()
    if side is not None:
        main = torch.cuda.current_stream(iq.device)
        main.wait_stream(side)
        if recording is not None:
            # made on side, read on main: the allocator must not hand its memory to side meanwhile
            recording.record_stream(main)
    return model.add_recording(logits, recording)
