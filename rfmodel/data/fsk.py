"""Frequency-shift keyed classes: 2fsk (rectangular frequency pulses, continuous or discontinuous
phase), gfsk and gmsk (Gaussian-filtered frequency pulses, continuous phase).

Symbols last a fractional T = period / K samples. The frequency waveform is integrated exactly over
each sample interval (a symbol boundary inside an interval splits it by the exact fraction), which
is what phase accumulation needs; the Gaussian filter acts on the periodic waveform in the DFT
domain.
"""

from __future__ import annotations

import numpy as np

from .draws import Draws
from .dsp import filter_periodic, periodic_phase, phasor, unit_phasor
from .linear import symbols_per_period
from .synthesis import MAX_BANDWIDTH, MAX_SPS, MIN_SPS, Synthesis

FSK_CLASSES = ("2fsk", "gfsk", "gmsk")


def _symbol_rate(draws: Draws, period: int, modulation_index: float) -> tuple[int, float]:
    """Symbols per period and samples per symbol, keeping Carson's band (h + 1) * Rs in range."""
    fastest = min(1 / MIN_SPS, MAX_BANDWIDTH / (modulation_index + 1))
    target_rate = draws.log_uniform("symbol_rate", 1 / MAX_SPS, fastest)
    n_symbols = symbols_per_period(period, target_rate)
    sps = period / n_symbols
    draws.record("symbol_rate", 1 / sps)
    draws.record("samples_per_symbol", sps)
    return n_symbols, sps


def _symbol_timeline(period: int, sps: float, timing: float) -> tuple[np.ndarray, np.ndarray]:
    """For each sample interval [n, n+1): the index of the symbol it starts in, and the fraction of
    the interval before the next symbol starts (1 when no boundary falls inside; sps >= 2 allows at
    most one)."""
    t = np.arange(period) - timing * sps
    current = np.floor(t / sps).astype(np.int64)
    fraction = np.clip((current + 1) * sps - t, 0.0, 1.0)
    return current, fraction


def _gfsk_h(rng: np.random.Generator) -> float:
    # h = 0.5 is gmsk's by definition; keep gfsk clear of it so the two labels never coincide
    low = rng.uniform(0.3, 0.45)
    return float(low if rng.random() < 0.5 else low + 0.25)


def synthesize_fsk(label: str, period: int, draws: Draws) -> Synthesis:
    rng = draws.rng
    if label == "2fsk":
        h = draws.uniform("modulation_index", 0.5, 2.5)
    elif label == "gfsk":
        h = draws.value("modulation_index", lambda: _gfsk_h(rng))
    else:
        h = draws.value("modulation_index", lambda: 0.5)
    n_symbols, sps = _symbol_rate(draws, period, h)
    timing = draws.uniform("timing_offset", 0.0, 1.0)
    deviation = h / (2 * sps)  # peak frequency deviation, cycles/sample
    bandwidth = 2 * (deviation + 1 / (2 * sps))  # Carson: 2 (deviation + highest message freq)
    bits = rng.integers(2, size=n_symbols) * 2.0 - 1.0
    current, fraction = _symbol_timeline(period, sps, timing)

    if label == "2fsk" and not draws.chance("continuous_phase", 0.5):
        # two free-running oscillators, switched: the phase jumps at every symbol boundary
        tones = np.round(deviation * period) / period  # whole cycles per period: periodic
        upper = phasor(tones, period, phase=rng.uniform(0, 2 * np.pi))
        lower = phasor(-tones, period, phase=rng.uniform(0, 2 * np.pi))
        signal = np.where(bits[current % n_symbols] > 0, upper, lower)
        return Synthesis(signal, bandwidth)

    nrz = fraction * bits[current % n_symbols] + (1 - fraction) * bits[(current + 1) % n_symbols]
    if label in ("gfsk", "gmsk"):
        bt = draws.uniform("bt", 0.3, 0.5) if label == "gfsk" else draws.uniform("bt", 0.25, 0.5)
        sigma = np.sqrt(np.log(2)) / (2 * np.pi * bt) * sps  # Gaussian filter std, samples
        nrz = filter_periodic(nrz, lambda f: np.exp(-2 * (np.pi * sigma * f) ** 2))
    phase = periodic_phase(deviation * nrz) + rng.uniform(0, 2 * np.pi)
    return Synthesis(unit_phasor(phase), bandwidth)
