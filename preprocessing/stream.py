"""Frames and features of an unbounded stream, pushed in chunks of any length.

Pushing chunks c1, c2, ... yields, in order and in total, exactly the frames one call on
torch.cat([c1, c2, ...]) gives, and its feature rows up to the FFT's rounding: the FFT of a
different batch of frames may round differently, which complex64 shows in bins far below the
frame's power (a few thousandths of a dB at -60 dB), complex128 not at any tested tolerance. Only
the tail that can still start a frame is kept: fewer than nfft samples.

The recording's features (preprocessing.recording) read only a recording's first segments, so a
stream keeps its first recording_segment x recording_max_segments samples for them (16,384 by
default), and `recording()` gives exactly what one call on everything pushed so far gives.
"""

from __future__ import annotations

import torch

from preprocessing.errors import InvalidParameter
from preprocessing.features import FeatureConfig, frame_features
from preprocessing.recording import recording_features, segment_length
from preprocessing.spectra import check_complex, check_frame_sizes, n_frames


class StreamFramer:
    def __init__(self, nfft: int, hop: int):
        self.nfft, self.hop = check_frame_sizes(nfft, hop)
        self._tail: torch.Tensor | None = None
        self.frames_emitted = 0

    @property
    def buffered(self) -> int:
        """Samples held back, waiting for the rest of their frame."""
        return 0 if self._tail is None else self._tail.shape[0]

    def push(self, chunk: torch.Tensor) -> torch.Tensor:
        """[n] complex -> [T_new, nfft] frames completed by this chunk (T_new may be 0)."""
        chunk = check_complex(chunk, "chunk")
        if chunk.ndim != 1:
            raise InvalidParameter("chunk", f"must be one-dimensional, got {tuple(chunk.shape)}")
        if self._tail is not None and (
            chunk.dtype != self._tail.dtype or chunk.device != self._tail.device
        ):
            raise InvalidParameter(
                "chunk",
                f"is {chunk.dtype} on {chunk.device}; the stream is "
                f"{self._tail.dtype} on {self._tail.device}",
            )
        # a copy on the first push too: the frames returned are views of `buffer`, and an SDR
        # loop reuses its receive buffer for the next chunk
        buffer = chunk.clone() if self._tail is None else torch.cat([self._tail, chunk])
        count = n_frames(buffer.shape[0], self.nfft, self.hop)
        # clone: the next push would otherwise keep the whole chunk alive through a view
        self._tail = buffer[count * self.hop :].clone()
        self.frames_emitted += count
        if count == 0:
            return buffer.new_empty(0, self.nfft)
        return buffer.unfold(0, self.nfft, self.hop)[:count]


class StreamingFeatures:
    """StreamFramer + frame_features: push IQ chunks, get feature rows [T_new, F] float32; and
    the recording's features of the stream so far."""

    def __init__(self, cfg: FeatureConfig):
        self.cfg = cfg
        self.framer = StreamFramer(cfg.nfft, cfg.hop)
        # no recording reads further than its first recording_max_segments whole segments, of
        # recording_segment cut to whole frames, or one frame if it is shorter
        longest = segment_length(max(cfg.recording_segment, cfg.nfft), cfg)
        self._head_limit = longest * cfg.recording_max_segments
        self._head: list[torch.Tensor] = []
        self._head_samples = 0

    def push(self, chunk: torch.Tensor) -> torch.Tensor:
        frames = self.framer.push(chunk)
        if self._head_samples < self._head_limit:
            kept = chunk[: self._head_limit - self._head_samples].clone()  # chunk was checked
            self._head.append(kept)
            self._head_samples += kept.shape[0]
        if frames.shape[0] == 0:
            return torch.empty(0, self.cfg.n_features, device=frames.device)
        return frame_features(frames, self.cfg)

    def recording(self) -> torch.Tensor | None:
        """[cfg.recording_views * F] float32: recording_features of everything pushed so far
        (TooFewSamples before nfft samples); None when the config has no recording features."""
        if self.cfg.recording_segment == 0:
            return None
        head = torch.cat(self._head) if self._head else torch.empty(0, dtype=torch.complex64)
        return recording_features(head[None], self.cfg)[0]
