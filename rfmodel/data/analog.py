"""Analog classes: am (double sideband with carrier) and fm, driven by a random band-limited
message: band-limited noise with a random spectral tilt, a few tones, or speech-like (formant
bumps under a slow syllabic envelope)."""

from __future__ import annotations

import numpy as np
from scipy import fft

from .draws import Draws
from .dsp import periodic_phase, phasor, unit_phasor
from .synthesis import MAX_BANDWIDTH, Synthesis

MESSAGE_KINDS = ("noise", "tones", "speech")


def _band_limited_noise(rng: np.random.Generator, period: int, top_bin: int, shape) -> np.ndarray:
    """Real periodic Gaussian noise with amplitude spectrum shape(bin) on bins 1..top_bin."""
    bins = np.arange(1, top_bin + 1)
    spectrum = np.zeros(period // 2 + 1, dtype=np.complex128)
    gaussian = rng.standard_normal(top_bin) + 1j * rng.standard_normal(top_bin)
    spectrum[bins] = shape(bins) * gaussian
    return fft.irfft(spectrum, n=period)


def message(draws: Draws, period: int, bandwidth: float) -> np.ndarray:
    """A zero-mean real message, periodic over `period`, peak magnitude 1, within `bandwidth`."""
    rng = draws.rng
    top_bin = max(1, min(int(bandwidth * period), period // 2 - 1))
    kind = draws.choice("message", MESSAGE_KINDS)
    if kind == "tones":
        n_tones = int(rng.integers(1, 4))
        tone_bins = rng.integers(1, top_bin + 1, size=n_tones)
        amplitudes = rng.uniform(0.3, 1.0, size=n_tones)
        phases = rng.uniform(0, 2 * np.pi, size=n_tones)
        x = sum(
            a * phasor(b / period, period, p).real
            for a, b, p in zip(amplitudes, tone_bins, phases, strict=True)
        )
    elif kind == "noise":
        tilt = rng.uniform(-1.0, 0.5)
        x = _band_limited_noise(rng, period, top_bin, lambda b: (b / top_bin) ** tilt)
    else:
        n_formants = int(rng.integers(2, 5))
        centres = rng.uniform(0.1, 0.9, size=n_formants) * top_bin
        widths = rng.uniform(0.03, 0.15, size=n_formants) * top_bin + 0.5

        def formants(b):
            return np.exp(-0.5 * ((b[None, :] - centres[:, None]) / widths[:, None]) ** 2).sum(0)

        # syllables: a log-normal envelope some 20-80 times slower than the message band
        syllable_bins = max(1, top_bin // int(rng.integers(20, 80)))
        level = _band_limited_noise(rng, period, syllable_bins, np.ones_like)
        envelope = np.exp(rng.uniform(0.5, 1.2) * level / level.std())
        x = _band_limited_noise(rng, period, top_bin, formants) * envelope
    x = x - x.mean()
    return x / np.max(np.abs(x))


def synthesize_am(period: int, draws: Draws) -> Synthesis:
    message_bandwidth = draws.log_uniform("message_bandwidth", 0.002, 0.1)
    depth = draws.uniform("modulation_depth", 0.3, 1.0)
    x = message(draws, period, message_bandwidth)
    return Synthesis((1.0 + depth * x).astype(np.complex128), bandwidth=2 * message_bandwidth)


def synthesize_fm(period: int, draws: Draws) -> Synthesis:
    message_bandwidth = draws.log_uniform("message_bandwidth", 0.002, 0.05)
    # deviation ratio deviation / message bandwidth; Carson's band must stay within MAX_BANDWIDTH
    widest_ratio = min(8.0, MAX_BANDWIDTH / (2 * message_bandwidth) - 1)
    ratio = draws.uniform("deviation_ratio", 1.0, widest_ratio)
    deviation = ratio * message_bandwidth
    draws.record("deviation", deviation)
    x = message(draws, period, message_bandwidth)
    phase = periodic_phase(deviation * x) + draws.rng.uniform(0, 2 * np.pi)
    return Synthesis(unit_phasor(phase), bandwidth=2 * (deviation + message_bandwidth))
