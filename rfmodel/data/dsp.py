"""Signal-processing building blocks shared by the modulators and the channel.

Every synthesised signal is one period of a periodic sequence: filtering, fractional delays and
resampling then act exactly as multiplications in the DFT domain, with no edge transients.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import fft, special

_PHASOR_BLOCK = 64


def phasor(freq: float, n: int, phase: float = 0.0) -> np.ndarray:
    """exp(j(2*pi*freq*m + phase)) for m = 0..n-1 (complex128).

    Built as an outer product of two short exponentials: numpy's complex exp costs ~15 ns a sample,
    this ~2 ns, with error ~1e-13."""
    n_blocks = -(-n // _PHASOR_BLOCK)
    inner = np.exp(2j * np.pi * freq * np.arange(_PHASOR_BLOCK))
    outer = np.exp(1j * (2 * np.pi * freq * _PHASOR_BLOCK * np.arange(n_blocks) + phase))
    return (outer[:, None] * inner[None, :]).ravel()[:n]


@functools.lru_cache(maxsize=64)
def signed_bins(n: int) -> np.ndarray:
    """DFT bin indices in signed order: 0, 1, ..., -2, -1 (frequency = bin / n). Cached (a
    training stream uses a handful of lengths), hence read-only."""
    bins = np.fft.fftfreq(n, 1.0 / n).astype(np.int64)
    bins.flags.writeable = False
    return bins


def hermitian_extend(half_spectrum: np.ndarray, n: int) -> np.ndarray:
    """The n-point DFT of a real sequence from its first n // 2 + 1 bins."""
    bins = signed_bins(n)
    full = half_spectrum[np.abs(bins)]
    negative = bins < 0
    full[negative] = np.conj(full[negative])
    return full


def delay_response(delay: float, n: int) -> np.ndarray:
    """DFT-domain response exp(-j*2*pi*f*delay) of a fractional delay (samples) on a period of n."""
    response = phasor(-delay / n, n)
    # bins from n//2 up are negative frequencies (bin - n): correct their phase accordingly
    response[(n + 1) // 2 :] *= np.exp(2j * np.pi * delay)
    return response


def rrc_spectrum(f_symbols: np.ndarray, rolloff: float) -> np.ndarray:
    """Root-raised-cosine amplitude response at f_symbols (frequency / symbol rate)."""
    f = np.abs(f_symbols)
    flat_edge = (1 - rolloff) / 2
    out = np.zeros_like(f, dtype=np.float64)
    out[f <= flat_edge] = 1.0
    roll = (f > flat_edge) & (f <= (1 + rolloff) / 2)
    out[roll] = np.cos(np.pi / (2 * rolloff) * (f[roll] - flat_edge))
    return out


def rrc_pulse(t_symbols: np.ndarray, rolloff: float) -> np.ndarray:
    """Root-raised-cosine impulse response at times t_symbols (in symbol periods), peak at t=0."""
    t = np.asarray(t_symbols, dtype=np.float64)
    b = rolloff
    out = np.empty_like(t)
    at_zero = np.abs(t) < 1e-9
    at_pole = np.abs(np.abs(t) - 1 / (4 * b)) < 1e-9
    regular = ~(at_zero | at_pole)
    tr = t[regular]
    out[regular] = (np.sin(np.pi * tr * (1 - b)) + 4 * b * tr * np.cos(np.pi * tr * (1 + b))) / (
        np.pi * tr * (1 - (4 * b * tr) ** 2)
    )
    out[at_zero] = 1 - b + 4 * b / np.pi
    out[at_pole] = (b / np.sqrt(2)) * (
        (1 + 2 / np.pi) * np.sin(np.pi / (4 * b)) + (1 - 2 / np.pi) * np.cos(np.pi / (4 * b))
    )
    return out


def truncated_rrc_spectrum(
    n: int,
    samples_per_symbol: float,
    rolloff: float,
    span_symbols: int,
    taper_beta: float,
    delay: float,
) -> np.ndarray:
    """Response at the n DFT bins of a period of n samples (signed order) of an RRC pulse truncated
    to span_symbols, tapered by a Kaiser window (the sidelobes a real, finite filter leaves) and
    centred `delay` samples after 0.

    The pulse is sampled at twice the output rate so that the response up to fs/2 is free of
    aliasing from the truncation sidelobes beyond fs/2 (those would alias in any case)."""
    rate = 2
    half_span = min(span_symbols * samples_per_symbol / 2, n / 2 - delay - 1)  # samples
    grid = np.arange(math.floor(rate * (delay - half_span)), math.ceil(rate * (delay + half_span)))
    offset = grid / rate - delay  # time from the pulse centre, samples
    inside = np.abs(offset) <= half_span
    grid, offset = grid[inside], offset[inside]
    taper = special.i0(taper_beta * np.sqrt(1 - (offset / half_span) ** 2)) / special.i0(taper_beta)
    circular = np.zeros(rate * n)
    circular[grid % (rate * n)] = rrc_pulse(offset / samples_per_symbol, rolloff) * taper
    # bins up to n/2 are all the output band needs
    return hermitian_extend(fft.rfft(circular)[: n // 2 + 1], n)


def fourier_resample(x: np.ndarray, n_out: int) -> np.ndarray:
    """Band-limited (periodic sinc) resampling of one period of x to n_out samples."""
    n_in = len(x)
    spectrum = fft.fft(x)
    out = np.zeros(n_out, dtype=np.complex128)
    keep = min(n_in, n_out)
    positive = (keep + 1) // 2
    negative = keep // 2
    out[:positive] = spectrum[:positive]
    if negative:
        out[-negative:] = spectrum[-negative:]
    return fft.ifft(out) * (n_out / n_in)


def filter_periodic(x: np.ndarray, response_of_freq) -> np.ndarray:
    """Filter one period of a real sequence by a zero-phase response given as a function of
    frequency (cycles/sample, 0..0.5)."""
    spectrum = fft.rfft(x)
    spectrum *= response_of_freq(np.fft.rfftfreq(len(x)))
    return fft.irfft(spectrum, n=len(x))


def unit_phasor(phase: np.ndarray) -> np.ndarray:
    """exp(j*phase) as complex64, via single-precision cos and sin of the phase wrapped to
    [0, 2*pi) (error ~3e-7): a third of the cost of numpy's complex128 exp."""
    wrapped = np.remainder(phase, 2 * np.pi).astype(np.float32)
    out = np.empty(len(phase), dtype=np.complex64)
    np.cos(wrapped, out=out.real)
    np.sin(wrapped, out=out.imag)
    return out


def periodic_phase(freq: np.ndarray) -> np.ndarray:
    """Phase (radians) of a signal with instantaneous frequency freq (cycles/sample), adjusted by
    less than half a DFT bin so that exp(j*phase) is exactly periodic over len(freq) samples."""
    total = float(np.sum(freq))
    adjusted = freq + (round(total) - total) / len(freq)
    return 2 * np.pi * np.cumsum(adjusted)
