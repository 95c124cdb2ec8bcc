"""OFDM: random FFT size (64-512), used-subcarrier fraction, DC null, cyclic prefix, optional
pilots, QPSK or 16-QAM subcarriers.

Symbols are built at the native rate (IFFT + cyclic prefix), then the whole periodic native signal
is resampled band-limitedly to the output rate, which sets the occupied span to a random fraction of
fs and makes the OFDM symbol period a fractional number of output samples."""

from __future__ import annotations

import math

import numpy as np
from scipy import fft

from .constellations import CONSTELLATIONS
from .draws import Draws
from .dsp import fourier_resample
from .synthesis import MAX_BANDWIDTH, Synthesis

FFT_SIZES = (64, 128, 256, 512)
CP_FRACTIONS = (1 / 32, 1 / 16, 1 / 8, 1 / 4)
PILOT_SPACINGS = (0, 6, 8, 12)  # 0 = no pilots


def _subcarriers(n_used: int, dc_null: bool) -> np.ndarray:
    """Used subcarrier indices, centred on DC (signed)."""
    half = n_used // 2
    if dc_null:
        return np.concatenate([np.arange(-half, 0), np.arange(1, n_used - half + 1)])
    return np.arange(-half, n_used - half)


def synthesize_ofdm(n_samples: int, draws: Draws) -> Synthesis:
    rng = draws.rng
    fft_size = draws.choice("ofdm_fft_size", FFT_SIZES)
    n_used = 2 * round(draws.uniform("ofdm_used_fraction", 0.5, 0.9) * fft_size / 2)
    dc_null = draws.chance("ofdm_dc_null", 0.5)
    cp_len = round(draws.choice("ofdm_cp_fraction", CP_FRACTIONS) * fft_size)
    modulation = draws.choice("ofdm_subcarrier_modulation", ("qpsk", "16qam"))
    pilot_spacing = draws.choice("ofdm_pilot_spacing", PILOT_SPACINGS)
    target_bandwidth = draws.log_uniform("bandwidth_target", 0.05, MAX_BANDWIDTH)

    carriers = _subcarriers(n_used, dc_null)
    slots = n_used + int(dc_null)  # the occupied span in subcarrier spacings
    symbol_len = fft_size + cp_len
    # enough native symbols that, at the target span, the period covers the requested samples
    n_symbols = math.ceil(n_samples * target_bandwidth * fft_size / (slots * symbol_len))
    native_len = n_symbols * symbol_len
    period = fft.next_fast_len(math.ceil(slots * native_len / (fft_size * target_bandwidth)))
    bandwidth = slots * native_len / (fft_size * period)
    draws.record("ofdm_symbol_samples", symbol_len * period / native_len)

    points = CONSTELLATIONS[modulation]
    grid = np.zeros((n_symbols, fft_size), dtype=np.complex128)
    grid[:, carriers] = points[rng.integers(len(points), size=(n_symbols, len(carriers)))]
    if pilot_spacing:
        pilots = carriers[:: int(pilot_spacing)]
        grid[:, pilots] = rng.choice([-1.0, 1.0], size=len(pilots))  # the same in every symbol
    body = fft.ifft(grid, axis=1)
    native = np.concatenate([body[:, fft_size - cp_len :], body], axis=1).ravel()
    signal = fourier_resample(native, period)
    # the period need not start on a symbol boundary
    return Synthesis(np.roll(signal, -int(rng.integers(period))), bandwidth)
