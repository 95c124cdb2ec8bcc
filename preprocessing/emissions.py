"""Every signal in a frame, and each one cut out to baseband: what a spectrum monitor scanning a
wide band needs before it can ask what each signal is.

`occupancy.occupied_band` measures a frame as holding one signal. Here, on the same Welch
spectrum, noise floor and detection threshold (preprocessing.occupancy):

- detected bins: above the floor by the threshold white noise passes in one frame of a
  thousand;
- each signal's extent: the run of bins around detected ones whose power, averaged over
  SMOOTH_BINS neighbours, stands out of the floor (EXTENT_FALSE_ALARM per bin). A wide signal
  near 0 dB in-band has most of its bins under the detection threshold, and they stay with it;
- runs closer than GAP_FRACTION of the band are one signal: an AM carrier and its sidebands,
  OFDM's null at its centre, the two tones of an FSK signal;
- each extent measured as occupancy measures a frame: the 99 % occupied bandwidth of its power
  above the floor, the centre at that span's midpoint, the in-band SNR over the noise inside it.

`baseband` then cuts one signal's band out of the frame's spectrum and brings it to 0 Hz at a
lower rate, so that it fills about as much of its new band as the training recordings' signals
fill of theirs (rfmodel.data: symbol rates fs/32 to fs/2).

Frequencies are in cycles per sample of the frame, in [-0.5, 0.5).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import fft as sfft
from scipy import stats

from preprocessing.occupancy import (
    MIN_SAMPLES,
    OCCUPIED_FRACTION,
    bin_shape,
    noise_floor,
    noise_statistics,
    welch_size,
    welch_spectrum,
)
from preprocessing.spectra import check_complex, rms_normalize

SMOOTH_BINS = 5
EXTENT_FALSE_ALARM = 1e-2  # chance that a white-noise bin's smoothed power counts as occupied
GAP_FRACTION = 1 / 64  # runs of occupied bins this close (fraction of the band) are one signal
# a baseband signal's occupied bandwidth as a fraction of its new band: inside the training
# recordings' range (about 0.03 to 0.75 of theirs), with room for the centre's error
FILL = 0.25


@dataclass(frozen=True)
class Emission:
    center: float  # cycles/sample of the frame
    bandwidth: float  # 99 % occupied bandwidth, cycles/sample of the frame
    snr_db: float  # in-band


@functools.lru_cache(maxsize=64)
def extent_threshold(n_samples: int, size: int) -> float:
    """The smoothed power, relative to the floor, above which a bin is part of a signal."""
    _, detection = noise_statistics(n_samples, size)
    # the mean of SMOOTH_BINS neighbours: about half as many independent values, as the Hann
    # window's neighbouring bins are correlated
    shape = bin_shape(n_samples, size) * max(1.0, SMOOTH_BINS / 2)
    return float(min(detection, stats.gamma.isf(EXTENT_FALSE_ALARM, shape, scale=1 / shape)))


def find_emissions(iq: torch.Tensor) -> list[list[Emission]]:
    """[B, N] complex frames on the CPU -> for each frame its signals, in order of frequency
    (none for a frame of noise, or one under MIN_SAMPLES)."""
    iq = check_complex(iq, "iq")
    n = iq.shape[-1]
    if n < MIN_SAMPLES:
        return [[] for _ in range(iq.shape[0])]
    size = welch_size(n)
    quantile, threshold = noise_statistics(n, size)
    p = welch_spectrum(rms_normalize(iq), size).double()  # [B, M]
    n0 = noise_floor(p, quantile, threshold)  # [B, 1]
    kernel = torch.ones(1, 1, SMOOTH_BINS, dtype=p.dtype) / SMOOTH_BINS
    pad = SMOOTH_BINS // 2
    circular = torch.cat([p[:, -pad:], p, p[:, :pad]], -1)[:, None]  # the band wraps at +-0.5
    smooth = torch.nn.functional.conv1d(circular, kernel)[:, 0]  # [B, M]
    detected = (p > n0 * threshold).numpy()
    extent = (smooth > n0 * extent_threshold(n, size)).numpy() | detected
    gap = max(1, round(GAP_FRACTION * size))
    found = [
        [measure(p[b].numpy(), float(n0[b, 0]), bins) for bins in signal_runs(e, d, gap)]
        for b, (e, d) in enumerate(zip(extent, detected, strict=True))
    ]
    # a run whose power does not pass the floor's is a fluctuation of the noise, not a signal;
    # the walk round the circle starts anywhere, so a run across +-0.5 may come first
    return [
        sorted((e for e in row if e.snr_db > -math.inf), key=lambda e: e.center) for row in found
    ]


def signal_runs(extent: np.ndarray, detected: np.ndarray, gap: int) -> list[np.ndarray]:
    """[M] bool masks -> the bin indices of each signal: runs of `extent` round the circle,
    joined across gaps of at most `gap` bins, kept if they hold a detected bin."""
    size = extent.size
    if not detected.any():
        return []
    if extent.all():
        return [np.arange(size)]
    # start the walk round the circle just after a free bin, so no run is cut at the seam
    start = int(np.flatnonzero(~extent)[-1]) + 1
    order = (np.arange(size) + start) % size
    runs: list[list[int]] = []
    last = -size
    for step, occupied in enumerate(extent[order]):
        if not occupied:
            continue
        if step - last > gap + 1 or not runs:
            runs.append([])
        runs[-1].append(step)
        last = step
    if len(runs) > 1 and runs[0][0] + size - runs[-1][-1] <= gap + 1:  # joined across the seam
        runs[0] = runs.pop() + [s + size for s in runs[0]]
    found = [order[np.asarray(r) % size] for r in runs]
    return [bins for bins in found if detected[bins].any()]


def measure(p: np.ndarray, n0: float, bins: np.ndarray) -> Emission:
    """One signal's centre, 99 % occupied bandwidth and in-band SNR from the Welch power p [M]
    of its frame, the floor n0 and its bins (in order along the circle, possibly wrapping)."""
    size = p.size
    # unwrap: frequencies increase along the run even where it passes +0.5
    steps = np.diff(bins, prepend=bins[0]) % size
    freqs = (bins[0] + np.cumsum(steps) - size // 2) / size  # each bin's centre
    excess = np.clip(p[bins] - n0, 0, None)
    cumulative = np.cumsum(excess) / max(excess.sum(), np.finfo(float).tiny)
    tail = (1 - OCCUPIED_FRACTION) / 2
    edges = freqs - 0.5 / size
    low, high = (_crossing(cumulative, edges, size, t) for t in (tail, 1 - tail))
    bandwidth = max(high - low, 1 / size)
    center = (low + high) / 2
    power = float(np.sum(p[bins] - n0))
    snr_db = 10 * math.log10(power / (n0 * size * bandwidth)) if power > 0 else -math.inf
    return Emission(center=float((center + 0.5) % 1.0 - 0.5), bandwidth=bandwidth, snr_db=snr_db)


def _crossing(cumulative: np.ndarray, left_edges: np.ndarray, size: int, target: float) -> float:
    """Frequency where the cumulative share first reaches target, linear within its bin."""
    index = min(int(np.searchsorted(cumulative, target)), cumulative.size - 1)
    before = cumulative[index - 1] if index else 0.0
    inside = max(cumulative[index] - before, np.finfo(float).tiny)
    return float(left_edges[index] + min(max((target - before) / inside, 0.0), 1.0) / size)


def baseband_length(
    emission: Emission, others: list[Emission], n_samples: int, min_samples: int, shortest: int
) -> int:
    """Samples of the cut-out of one signal from a frame of n_samples: at least enough that it
    fills at most FILL of its new band, and at least `shortest` (the least the model takes);
    past that as many as min_samples, but only while the new band stays clear of the other
    signals (a short frame cannot be cut both long and alone, and alone comes first); never
    more than the frame had. Where the signal's own fill needs a band that reaches a neighbour,
    the neighbour's edge is in the cut."""
    fills = max(shortest, math.ceil(emission.bandwidth * n_samples / FILL))
    clear = n_samples
    for other in others:
        # from the centre to the nearer edge of the other, round the circle
        apart = abs((other.center - emission.center + 0.5) % 1.0 - 0.5) - other.bandwidth / 2
        clear = min(clear, math.floor(2 * apart * n_samples))
    return min(n_samples, max(fills, min(min_samples, clear)))


def baseband(
    iq: np.ndarray,
    emissions: list[Emission],
    among: list[Emission],
    min_samples: int,
    shortest: int,
) -> list[np.ndarray]:
    """[N] complex frame -> each of `emissions` moved to 0 Hz and resampled to fill FILL of its
    band (complex64, baseband_length samples, kept clear of the rest of `among`, every signal
    found in the frame; its rate is the frame's times that over N).

    The band is cut in the frequency domain, so the noise stays white across all of it, as in
    the recordings the model was trained on. scipy's polyphase decimator, whose roll-off dips
    the noise at the band's edges, lost 8.6 points of accuracy at 0 dB and 2.0 at 10 dB
    against the signals recorded alone, this cut 3.0 and none (docs/experiments/scan). The
    centre moves to the nearest of the frame's FFT bins, within half a bin of 0 Hz."""
    n = iq.shape[-1]
    spectrum = sfft.fft(iq.astype(np.complex128)) if emissions else None
    cuts = []
    for emission in emissions:
        others = [other for other in among if other is not emission]
        keep = baseband_length(emission, others, n, min_samples, shortest)
        bins = (round(emission.center * n) - keep // 2 + np.arange(keep)) % n  # lowest first
        # the centre bin to index 0, the new band's DC; keep / n keeps the samples' amplitude
        cut = sfft.ifft(np.fft.ifftshift(spectrum[bins])) * (keep / n)
        cuts.append(cut.astype(np.complex64))
    return cuts
