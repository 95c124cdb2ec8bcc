"""Propagation and receiver impairments.

Propagation acts on one period of the transmitted signal (exactly, in the DFT domain): static
multipath with Rayleigh or Rician taps at fractional delays, and slow flat fading with a Jakes
Doppler spectrum. The receiver then adds its carrier offset and phase, noise (set by the in-band
SNR), IQ imbalance, a DC offset and an overall gain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import fft

from .draws import Draws
from .dsp import phasor, signed_bins

# What `impairments=False` sets: an ideal channel and receiver (noise is set by snr_db alone).
NO_IMPAIRMENTS = {
    "multipath": False,
    "fading": False,
    "cfo": 0.0,
    "phase": 0.0,
    "iq_gain_db": 0.0,
    "iq_phase_deg": 0.0,
    "dc_offset_db": None,
    "level_db": 0.0,
}


SINC_REACH = 16  # samples on each side of a multipath tap that its interpolator spans


def _rician_gain(rng: np.random.Generator, k_factor_db: float | None) -> complex:
    """A unit-mean-power complex gain: Rayleigh when k_factor_db is None."""
    scatter = (rng.standard_normal() + 1j * rng.standard_normal()) / np.sqrt(2)
    if k_factor_db is None:
        return complex(scatter)
    k = 10 ** (k_factor_db / 10)
    line_of_sight = np.exp(1j * rng.uniform(0, 2 * np.pi))
    return complex(np.sqrt(k / (k + 1)) * line_of_sight + np.sqrt(1 / (k + 1)) * scatter)


def _draw_k_factor(draws: Draws, name: str) -> float | None:
    rician = draws.rng.random() < 0.5
    return draws.value(name, lambda: float(draws.rng.uniform(0, 15)) if rician else None)


def multipath(signal: np.ndarray, draws: Draws) -> np.ndarray:
    if not draws.chance("multipath", 0.6):
        return signal
    rng = draws.rng
    n_taps = draws.integer("multipath_taps", 2, 5)
    max_delay = draws.log_uniform("multipath_max_delay", 0.5, 16.0)  # samples
    decay = draws.uniform("multipath_decay", 0.2, 1.0) * max_delay  # power delay profile scale
    k_factor = _draw_k_factor(draws, "multipath_k_factor_db")
    delays = np.concatenate([[0.0], np.sort(rng.uniform(0, max_delay, n_taps - 1))])
    powers = np.exp(-delays / decay)
    gains = [_rician_gain(rng, k_factor)]
    gains += [_rician_gain(rng, None) for _ in range(n_taps - 1)]
    gains = np.sqrt(powers) * np.asarray(gains)
    draws.record("multipath_delays", delays.tolist())
    draws.record("multipath_gains", gains.tolist())
    n = len(signal)
    # the channel as a short FIR: a windowed-sinc interpolator per tap at its fractional delay
    taps = np.arange(-SINC_REACH, math.ceil(delays[-1]) + SINC_REACH + 1)
    offset = taps[None, :] - delays[:, None]
    interpolators = np.sinc(offset) * np.where(
        np.abs(offset) < SINC_REACH + 1, np.cos(np.pi * offset / (2 * SINC_REACH + 2)) ** 2, 0.0
    )
    impulse_response = np.zeros(n, dtype=np.complex128)
    impulse_response[taps % n] = (gains[:, None] * interpolators).sum(axis=0)
    return fft.ifft(fft.fft(signal) * fft.fft(impulse_response))


def fading(signal: np.ndarray, draws: Draws) -> np.ndarray:
    """Flat time-varying fading: complex Gaussian gain with a Jakes (U-shaped) Doppler spectrum,
    plus a line-of-sight part when Rician; periodic over the signal's period. A Doppler under one
    bin of that period (1/n) gives a static gain."""
    if not draws.chance("fading", 0.25):
        return signal
    rng = draws.rng
    n = len(signal)
    doppler = draws.log_uniform("doppler", 2e-5, 2e-3)  # cycles/sample
    k_factor = _draw_k_factor(draws, "fading_k_factor_db")
    bins = signed_bins(n)
    # the highest Doppler bin: 0 below one bin (1/n), so slower fading is a static gain
    top = int(doppler * n)
    # as many normals are drawn as before session 27 (when `top` was at least 1), and those for
    # bins above `top` are left unused, so every draw after this one is unchanged by the fix
    drawn = np.abs(bins) <= max(1, top)
    real = rng.standard_normal(drawn.sum())
    imag = rng.standard_normal(drawn.sum())
    used = np.abs(bins[drawn]) <= top
    inside = np.abs(bins) <= top
    relative = np.minimum(np.abs(bins[inside]) / (top + 1), 0.99)
    spectrum = np.zeros(n, dtype=np.complex128)
    spectrum[inside] = (1 - relative**2) ** -0.25 * (real[used] + 1j * imag[used])
    scatter = fft.ifft(spectrum)
    scatter /= np.sqrt(np.mean(np.abs(scatter) ** 2))
    gain = scatter
    if k_factor is not None:
        k = 10 ** (k_factor / 10)
        line_of_sight = np.exp(1j * rng.uniform(0, 2 * np.pi))
        gain = np.sqrt(k / (k + 1)) * line_of_sight + np.sqrt(1 / (k + 1)) * scatter
    return signal * gain


def frequency_offset(signal: np.ndarray, draws: Draws, gain: float = 1.0) -> np.ndarray:
    """Carrier offset and phase (and a real gain), returned as complex64."""
    cfo = draws.uniform("cfo", -0.1, 0.1)  # cycles/sample
    phase = draws.uniform("phase", 0.0, 2 * np.pi)
    rotation = phasor(cfo, len(signal), phase)
    rotation *= gain
    rotation *= signal
    return rotation.astype(np.complex64)


def awgn(n: int, variance: float, rng: np.random.Generator) -> np.ndarray:
    # float32 draws: the recording is complex64 anyway, and they cost less
    noise = rng.standard_normal(2 * n, dtype=np.float32).view(np.complex64)
    noise *= np.float32(np.sqrt(variance / 2))
    return noise


@dataclass(frozen=True)
class Receiver:
    iq_gain: float  # Q branch gain relative to I
    iq_skew: float  # Q branch phase error, radians
    dc_relative: complex  # DC offset relative to the rms of what the receiver sees
    level_db: float  # rms of the final recording, dB re 1.0

    def iq_imbalance(self, x: np.ndarray) -> np.ndarray:
        if self.iq_gain == 1.0 and self.iq_skew == 0.0:
            return x
        i, q = x.real, x.imag
        out = np.empty_like(x)
        out.real = i
        # Python floats keep single-precision input single
        out.imag = self.iq_gain * (math.cos(self.iq_skew) * q - math.sin(self.iq_skew) * i)
        return out


def draw_receiver(draws: Draws) -> Receiver:
    rng = draws.rng
    gain_db = draws.uniform("iq_gain_db", -1.0, 1.0)
    skew_deg = draws.uniform("iq_phase_deg", -5.0, 5.0)
    dc_db = draws.value(
        "dc_offset_db", lambda: float(rng.uniform(-45, -15)) if rng.random() < 0.7 else None
    )
    dc = 0j if dc_db is None else 10 ** (dc_db / 20) * np.exp(1j * rng.uniform(0, 2 * np.pi))
    # recordings arrive at any scale: from far below to near full scale
    level_db = draws.uniform("level_db", -80.0, 0.0)
    return Receiver(10 ** (gain_db / 20), float(np.deg2rad(skew_deg)), complex(dc), level_db)
