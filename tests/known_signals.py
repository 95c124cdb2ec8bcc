"""Signals whose band, centre and SNR are known by construction, for the spectrum measurements'
tests."""

from __future__ import annotations

import numpy as np


def white(rng: np.random.Generator, n: int, rows: int = 1, power: float = 1.0) -> np.ndarray:
    """[rows, n] complex white Gaussian noise of this power."""
    z = rng.standard_normal((rows, n)) + 1j * rng.standard_normal((rows, n))
    return np.sqrt(power / 2) * z


def band_noise(
    rng: np.random.Generator, n: int, low: float, high: float, power: float
) -> np.ndarray:
    """[n] Gaussian noise flat over [low, high) cycles/sample and nothing outside, of this
    power; low > high wraps round the band's edge at +-0.5."""
    spectrum = np.fft.fft(white(rng, n)[0])
    freqs = np.fft.fftfreq(n)
    inside = (freqs >= low) & (freqs < high) if low < high else (freqs >= low) | (freqs < high)
    spectrum[~inside] = 0
    x = np.fft.ifft(spectrum)
    return x * np.sqrt(power / np.mean(np.abs(x) ** 2))
