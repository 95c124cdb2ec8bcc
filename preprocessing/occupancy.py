"""Where a frame's signal sits, how wide it is and how far it stands above the noise: what a
spectrum monitor reports beside the class.

How, per frame of N samples (unit RMS first, so any gain gives the same answer):
- the Welch spectrum p: frames of M samples (M the power of two nearest N / 32, within 64..4,096,
  so about 60 frames are averaged at any length), half overlapping, Hann, scaled so that p sums
  to the frame's power; DC in the centre bin;
- the noise power per bin n0: a first guess from the FLOOR_QUANTILE quantile of p, divided by
  that quantile of a white-noise bin's average (gamma distributed, with the equivalent degrees of
  freedom of the overlapping frames, Welch 1967); then the mean of the bins that guess finds clear
  of the signal (noise_floor). It assumes the noise is white across the band and the signal leaves
  some of the bins to it (a signal over all but FLOOR_QUANTILE of them raises the floor);
- occupied bins: those above n0 by the gamma quantile that white noise passes in one frame of a
  thousand (FALSE_ALARM over all M bins). None: no signal, and the measurements are NaN;
- bandwidth: the span holding 99 % of the occupied bins' power above n0 (ITU-R SM.328's occupied
  bandwidth: 0.5 % left out at each end), interpolated within bins, around the circle (a signal
  may straddle the band's edge at +-0.5); centre: that span's midpoint;
  SNR: the power above the noise, p's sum less M n0, over the noise inside that
  bandwidth, n0 M bandwidth. This is the in-band SNR the training data is made with
  (rfmodel.data), so it tells whether a recording is in the range the model was trained for.

Frequencies are in cycles per sample (fractions of the sample rate), in [-0.5, 0.5).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from scipy import stats

from preprocessing.spectra import check_complex, frame_power, frames_of, rms_normalize, window_array

WINDOW = "hann"
FALSE_ALARM = 1e-3  # chance that a frame of white noise shows an occupied bin
OCCUPIED_FRACTION = 0.99
# low, so that a signal filling most of the band still leaves the quantile among the noise bins
FLOOR_QUANTILE = 0.02
SKIRT_BINS = 2  # bins either side of an occupied one left out of the noise floor
QUIET_FRACTION = 1 / 8  # the stretch of the circular spectrum where it is cut open
MIN_SAMPLES = 256
# measurements per frame, in this order, in the last dimension of occupied_band's result
FIELDS = ("center", "bandwidth", "snr_db")


def welch_size(n_samples: int) -> int:
    """Samples per Welch frame for a frame of n_samples: about 60 half-overlapping frames."""
    size = 1 << max(0, round(math.log2(max(n_samples, 1) / 32)))
    return min(max(size, 64), 4096, 1 << int(math.log2(max(n_samples, 1))))


def floor_rank(size: int) -> int:
    """The order statistic (1-based) of the M bins that the noise floor's first guess reads."""
    return max(1, int(FLOOR_QUANTILE * size))


def bin_shape(n_samples: int, size: int) -> float:
    """The gamma shape of a white-noise bin's Welch average relative to its mean: the
    equivalent degrees of freedom / 2 of the average of overlapping periodograms."""
    hop = size // 2
    frames = 1 + (n_samples - size) // hop
    w = window_array(WINDOW, size)
    overlap = float(np.dot(w[hop:], w[:-hop]) / np.dot(w, w)) if frames > 1 else 0.0
    return frames / (1 + 2 * (1 - 1 / frames) * overlap**2)


@functools.lru_cache(maxsize=64)
def noise_statistics(n_samples: int, size: int) -> tuple[float, float]:
    """(the FLOOR_QUANTILE quantile, the detection threshold) of a white-noise bin's Welch
    average, both relative to its mean, for frames of `size` every size / 2 over n_samples."""
    shape = bin_shape(n_samples, size)
    # the expected k-th of M order statistics sits near the k / (M + 1) quantile
    quantile = stats.gamma.ppf(floor_rank(size) / (size + 1), shape, scale=1 / shape)
    threshold = stats.gamma.isf(FALSE_ALARM / size, shape, scale=1 / shape)
    return float(quantile), float(threshold)


def welch_spectrum(iq: torch.Tensor, size: int) -> torch.Tensor:
    """[B, N] complex -> [B, size] Welch power per bin (DC centred), summing to each row's power."""
    frames = frames_of(iq, size, size // 2)  # [B, K, size]
    return frame_power(frames, WINDOW, unit_energy=True).mean(-2) / size


def occupied_band(iq: torch.Tensor) -> torch.Tensor:
    """[B, N] complex frames -> [B, 3] float32: centre (cycles/sample), occupied bandwidth
    (cycles/sample) and in-band SNR (dB) of each frame's signal; NaN where no signal stands out
    of the noise, and for frames under MIN_SAMPLES (too few for a spectrum to average)."""
    iq = check_complex(iq, "iq")
    n = iq.shape[-1]
    if n < MIN_SAMPLES:
        return torch.full((iq.shape[0], len(FIELDS)), math.nan, device=iq.device)
    size = welch_size(n)
    quantile, threshold = noise_statistics(n, size)
    p = welch_spectrum(rms_normalize(iq), size)  # [B, M]
    n0 = noise_floor(p, quantile, threshold)  # [B, 1]
    excess = torch.where(p > n0 * threshold, p - n0, 0)  # [B, M]
    total = excess.sum(-1, keepdim=True)  # [B, 1]
    detected = total[:, 0] > 0
    share = excess / total.clamp_min(torch.finfo(p.dtype).tiny)
    low, high = occupied_span(share)
    bandwidth = high - low
    # the span's midpoint, as a spectrum analyser reports the centre of an occupied bandwidth:
    # the power's mean would follow a channel's tilt across the band
    center = torch.remainder((low + high) / 2 + 0.5, 1.0) - 0.5
    signal = p.sum(-1) - size * n0[:, 0]
    snr_db = 10 * torch.log10(signal.clamp_min(0) / (n0[:, 0] * size * bandwidth))
    measured = torch.stack([center, bandwidth, snr_db], -1)
    valid = detected & (signal > 0) & (bandwidth > 0)
    return torch.where(valid[:, None], measured, math.nan).float()


def noise_floor(p: torch.Tensor, quantile: float, threshold: float) -> torch.Tensor:
    """[B, M] Welch power -> [B, 1] noise power per bin. The quantile estimate reads high where
    the signal takes many bins (the quantile of the noise bins alone is then a higher one), so it
    only finds the bins clear of the signal, and the floor is their mean: unbiased on white
    noise, and steadier than any one quantile."""
    size = p.shape[-1]
    k = floor_rank(size)
    first = p.kthvalue(k, -1, keepdim=True).values / quantile  # [B, 1]
    # clear: under the threshold, and not next to a bin over it (the window's leakage and a
    # band's skirts sit there)
    over = (p > first * threshold).to(p.dtype)[:, None]  # [B, 1, M]
    near = torch.nn.functional.max_pool1d(over, 2 * SKIRT_BINS + 1, 1, SKIRT_BINS)[:, 0] > 0
    clear = (~near).to(p.dtype)
    count = clear.sum(-1, keepdim=True)
    mean = (p * clear).sum(-1, keepdim=True) / count.clamp_min(1)
    n0 = torch.where(count >= k, mean, first)
    # a floor 120 dB under the frame keeps a noiseless frame's SNR finite
    return n0.clamp_min(1e-12 / size)


def occupied_span(share: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, M] each bin's share of the power above the noise (DC centred) -> the [B] lower and
    upper frequency of the span holding OCCUPIED_FRACTION of it; the upper may pass 0.5 for a
    signal across the band's edge. The spectrum is circular, so it is cut open at three places
    and the narrowest span kept: at the band's edge, at DC, and in the middle of the row's
    quietest stretch of QUIET_FRACTION of the band (outside any signal that leaves that much of
    the band free; the fixed cuts cover two tones whose gap is the quietest stretch)."""
    size = share.shape[-1]
    width = max(1, int(QUIET_FRACTION * size))
    # power in the `width` bins after each bin, round the circle
    running = torch.cat([share, share[:, :width]], -1).cumsum(-1)  # [B, M + width]
    ahead = running[:, width:] - running[:, :size]  # [B, M]
    quiet = (ahead.argmin(-1, keepdim=True) + 1 + width // 2) % size  # [B, 1]
    best_low, best_high = span_from(share, torch.zeros_like(quiet))
    for cut in (torch.full_like(quiet, size // 2), quiet):
        low, high = span_from(share, cut)
        narrower = high - low < best_high - best_low
        best_low, best_high = (
            torch.where(narrower, low, best_low),
            torch.where(narrower, high, best_high),
        )
    return best_low, best_high


def span_from(share: torch.Tensor, cut: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The occupied span of [B, M] shares with each row's circle cut open before bin cut [B, 1]."""
    size = share.shape[-1]
    bins = torch.arange(size, device=share.device)
    rolled = share.gather(-1, (bins + cut) % size)  # bin `cut` first
    # rolled bin j spans [(cut + j - M/2 - 1/2) / M, ... + 1 / M): increasing, unwrapped
    left_edges = ((bins + cut - size // 2).to(share.dtype) - 0.5) / size
    cumulative = rolled.cumsum(-1)
    tail = (1 - OCCUPIED_FRACTION) / 2
    low, high = (crossing(cumulative, rolled, t, left_edges) for t in (tail, 1 - tail))
    return low, high


def crossing(
    cumulative: torch.Tensor, share: torch.Tensor, target: float, left_edges: torch.Tensor
) -> torch.Tensor:
    """[B] frequency where the cumulative share of power first reaches target, linear within
    the bin that holds it; left_edges [B, M] the bins' lower frequencies."""
    target_t = torch.full_like(cumulative[:, :1], target)
    last = cumulative.shape[-1] - 1
    index = torch.searchsorted(cumulative.contiguous(), target_t).clamp_max(last)
    before = cumulative.gather(-1, index) - share.gather(-1, index)  # the share below bin `index`
    inside = share.gather(-1, index).clamp_min(torch.finfo(share.dtype).tiny)
    frac = ((target_t - before) / inside).clamp(0, 1)
    return (left_edges.gather(-1, index) + frac / cumulative.shape[-1])[:, 0]
