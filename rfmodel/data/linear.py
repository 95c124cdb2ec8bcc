"""Linearly modulated classes (ook, 4ask, bpsk, qpsk, 8psk, 16qam, 64qam): random symbols shaped by
a root-raised-cosine pulse at a fractional number of samples per symbol.

The signal is synthesised in the DFT domain of one period holding an integer number K of symbols:
with T = period / K samples per symbol (fractional), sum_k a_k p(n - kT - tau) has DFT
A[bin mod K] * P(bin / period) * exp(-j 2 pi bin tau / period), A being the K-point DFT of the
symbols. That places every pulse at its exact fractional time with any pulse shape, at the cost of
three FFTs.
"""

from __future__ import annotations

from scipy import fft

from .constellations import CONSTELLATIONS
from .draws import Draws
from .dsp import delay_response, rrc_spectrum, signed_bins, truncated_rrc_spectrum
from .synthesis import MAX_SPS, MIN_SPS, Synthesis

LINEAR_CLASSES = tuple(CONSTELLATIONS)


def symbols_per_period(period: int, symbol_rate: float) -> int:
    """An integer symbol count near period * symbol_rate that does not divide the period, so the
    samples per symbol are never an exact integer."""
    count = max(2, round(period * symbol_rate))
    while period % count == 0:
        count += 1
    return count


def synthesize_linear(label: str, period: int, draws: Draws) -> Synthesis:
    rng = draws.rng
    points = CONSTELLATIONS[label]
    target_rate = draws.log_uniform("symbol_rate", 1 / MAX_SPS, 1 / MIN_SPS)
    n_symbols = symbols_per_period(period, target_rate)
    sps = period / n_symbols
    draws.record("symbol_rate", 1 / sps)
    draws.record("samples_per_symbol", sps)
    rolloff = draws.uniform("rolloff", 0.15, 0.5)
    # 0 = the ideal, untruncated pulse; otherwise a filter of that many symbols
    span = draws.value(
        "pulse_span_symbols", lambda: 0 if rng.random() < 0.25 else int(rng.integers(6, 17))
    )
    timing = draws.uniform("timing_offset", 0.0, 1.0)  # of a symbol period

    symbols = points[rng.integers(len(points), size=n_symbols)]
    bins = signed_bins(period)
    if span:
        taper = draws.uniform("pulse_taper_beta", 0.0, 4.0)
        pulse = truncated_rrc_spectrum(period, sps, rolloff, span, taper, delay=timing * sps)
    else:
        pulse = rrc_spectrum(bins * (sps / period), rolloff) * delay_response(timing * sps, period)
    spectrum = fft.fft(symbols)[bins % n_symbols] * pulse
    return Synthesis(fft.ifft(spectrum), bandwidth=(1 + rolloff) / sps)
