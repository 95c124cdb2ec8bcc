"""Features of the whole recording: one vector per recording, in the frame tokens' layout, that
the classifier reads beside its frame tokens (rfmodel's recording head).

Why: within one frame of nfft samples the pairs that share a spectrum stay confused. A spectral
line of x^4 or x^8 stands 10 log10(S / nfft) dB further out of the noise over S samples than over
one frame, and the quantiles of |x|^2 and of the instantaneous frequency settle over thousands of
samples. A linear probe at SNR 10-30 dB told qpsk from 8psk 0.952 of the time from these, 0.805
from the frame tokens pooled; gfsk from gmsk 0.967 against 0.600 (docs/experiments/
recording_features/).

How: every slot of FeatureConfig.transforms is computed exactly as for a frame, over segments of
S = recording_segment samples (or the recording's length, if it is shorter), cut to whole frames
of nfft, instead of frames, averaged over the recording's first whole segments (at most
recording_max_segments, 4 by default: about 2 ms on one CPU core, against 4 ms for 8; on
32,768-sample recordings 1, 2, 4 or 8 segments scored the same, within 1.5 points), then brought
from S values back to nfft:
    spectra kept in frequency order ("x", "env"): the mean of each S / nfft adjacent bins, the
        spectrum at the frames' resolution with S / nfft times less variance per bin;
    sorted spectra and the distributions: their nfft quantiles at evenly spaced probabilities,
        first and last included (so a sorted spectrum keeps its strongest bin, the line);
    "if_q": rescaled from FFT bins of the segment to FFT bins of a frame, its unit.
Both reductions are linear, so reducing before or after averaging the segments is the same.
Segments rather than the whole recording keep the values' scale independent of its length
(a line over a million samples would otherwise stand 24 dB higher than over 4,096).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from preprocessing.band import band_limited
from preprocessing.errors import TooFewSamples
from preprocessing.features import (
    TRANSFORMS,
    FeatureConfig,
    check_recordings,
    compute_features,
    quantile_positions,
    stacked_groups,
)
from preprocessing.spectra import check_complex

# slots whose values are in FFT bins of the segment they were computed over
BIN_VALUED = ("if_q",)


def segment_length(n_samples: int, cfg: FeatureConfig) -> int:
    """Samples per segment for a recording of n_samples (at least nfft): recording_segment, or
    the recording if it is shorter, cut to whole frames of nfft (at least one)."""
    return max(cfg.nfft, min(cfg.recording_segment, n_samples) // cfg.nfft * cfg.nfft)


def used_samples(n_samples: int, cfg: FeatureConfig) -> int:
    """The samples the recording features read: its first whole segments, at most
    recording_max_segments of them."""
    segment = segment_length(n_samples, cfg)
    return min(n_samples // segment, cfg.recording_max_segments) * segment


def recording_features(iq: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor | None:
    """[B, N] complex -> [B, cfg.recording_views * F] float32 on iq's device, F = cfg.n_features:
    the segments' features, then (recording_band_limit) those of the segments filtered to their
    band; None when the config has no recording features (recording_segment 0)."""
    if cfg.recording_segment == 0:
        return None
    iq = check_complex(iq, "iq")
    n = iq.shape[-1]
    if n < cfg.nfft:
        raise TooFewSamples("samples", f"got {n} samples; at least nfft={cfg.nfft} needed")
    segment = segment_length(n, cfg)
    used = iq[..., : used_samples(n, cfg)]
    views = [segment_features(used, segment, cfg)]
    if cfg.recording_band_limit:
        segments = used.unflatten(-1, (-1, segment))  # [B, m, S]
        band = band_limited(segments, cfg.nfft, cfg.window).flatten(-2)
        views.append(segment_features(band, segment, cfg))
    return torch.cat(views, -1)  # [B, views * F]


def segment_features(used: torch.Tensor, segment: int, cfg: FeatureConfig) -> torch.Tensor:
    """[B, m * segment] complex -> [B, F]: each slot over the m segments, averaged, brought back
    to nfft values (module docstring)."""
    per_segment = dataclasses.replace(cfg, nfft=segment, hop=segment, recording_segment=0)
    mean = compute_features(used, per_segment).mean(-2)  # [B, K * S] over the segments
    slots = mean.unflatten(-1, (len(cfg.transforms), segment))  # [B, K, S]
    lower, upper, frac = quantile_positions(segment, cfg.nfft, mean.device, mean.dtype)
    reduced = []
    for k, name in enumerate(cfg.transforms):
        values = slots[:, k]  # [B, S]
        if name in TRANSFORMS and name not in cfg.sorted_transforms:
            values = values.unflatten(-1, (cfg.nfft, segment // cfg.nfft)).mean(-1)
        else:
            values = torch.lerp(values[:, lower], values[:, upper], frac)
        if name in BIN_VALUED:
            values = values * (cfg.nfft / segment)
        reduced.append(values)
    return torch.cat(reduced, -1)  # [B, F]


def batch_recording_features(
    recordings: Sequence[torch.Tensor],
    cfg: FeatureConfig,
    device: torch.device | str | None = None,
) -> torch.Tensor | None:
    """Recordings of different lengths -> [B, F] float32; those with the same whole segments are
    computed as one batch. None when the config has no recording features."""
    if cfg.recording_segment == 0:
        return None
    check_recordings(recordings, cfg)
    device = torch.device(device) if device is not None else recordings[0].device
    out = torch.empty(len(recordings), cfg.recording_views * cfg.n_features, device=device)
    used = [used_samples(rec.shape[0], cfg) for rec in recordings]
    for rows, batch in stacked_groups(recordings, used, device):
        out[rows] = recording_features(batch, cfg)
    return out
