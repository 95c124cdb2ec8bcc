"""One labelled recording: modulate, propagate, receive.

SNR is in-band: signal power over the noise power inside the signal's nominal occupied bandwidth B
(cycles/sample, fs = 1), so the noise variance over the whole band is P_signal / snr * 1 / B. The
signal power is measured on the recording itself after propagation (multipath, fading), before the
receiver (IQ imbalance, DC offset and the overall level act on signal and noise alike).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import fft

from .analog import synthesize_am, synthesize_fm
from .channel import (
    NO_IMPAIRMENTS,
    awgn,
    draw_receiver,
    fading,
    frequency_offset,
    multipath,
)
from .classes import CLASSES, NOISE
from .draws import Draws
from .fsk import FSK_CLASSES, synthesize_fsk
from .linear import LINEAR_CLASSES, synthesize_linear
from .ofdm import synthesize_ofdm
from .synthesis import Synthesis

SNR_RANGE = (-10.0, 30.0)
MIN_SAMPLES = 256
MAX_SAMPLES = 1 << 24


@dataclass
class Example:
    iq: np.ndarray  # complex64 [n_samples]
    label: str
    snr_db: float  # in-band SNR; NaN for the noise class (no signal)
    params: dict[str, Any] = field(default_factory=dict)  # every value drawn or derived
    clean: np.ndarray | None = None  # complex64 [n_samples]: iq without the noise (keep_clean)


def _power(x: np.ndarray) -> float:
    # not np.vdot: BLAS would wake its thread pool, which in N DataLoader workers oversubscribes
    # the cores N times over
    parts = x.view(x.real.dtype)
    return float(np.sum(parts * parts)) / len(x)


def _synthesize(label: str, n_samples: int, draws: Draws) -> Synthesis:
    period = fft.next_fast_len(n_samples)
    if label in LINEAR_CLASSES:
        return synthesize_linear(label, period, draws)
    if label in FSK_CLASSES:
        return synthesize_fsk(label, period, draws)
    if label == "am":
        return synthesize_am(period, draws)
    if label == "fm":
        return synthesize_fm(period, draws)
    return synthesize_ofdm(n_samples, draws)


def _check_request(label: str, n_samples: int, snr_db: float | None) -> None:
    if label not in CLASSES:
        raise ValueError(f"label: unknown class {label!r}; known: {', '.join(CLASSES)}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)):
        raise TypeError(f"n_samples: expected an integer, got {type(n_samples).__name__}")
    if not MIN_SAMPLES <= n_samples <= MAX_SAMPLES:
        raise ValueError(f"n_samples: {n_samples} outside {MIN_SAMPLES}..{MAX_SAMPLES}")
    if label == NOISE and snr_db is not None and not math.isnan(snr_db):
        raise ValueError("snr_db: the noise class has no signal, so no SNR; pass None")
    if snr_db is not None and math.isnan(snr_db) and label != NOISE:
        raise ValueError(f"snr_db: NaN for class {label!r}; NaN marks the noise class only")


def generate_example(
    label: str,
    n_samples: int,
    rng: np.random.Generator,
    snr_db: float | None = None,
    *,
    keep_clean: bool = False,
    **overrides: Any,
) -> Example:
    """A recording of class `label`, n_samples long, every random choice drawn from `rng`.

    snr_db: in-band SNR in dB; None draws it uniformly from SNR_RANGE; +inf gives no noise.
    overrides: fix any drawn parameter by its name in Example.params (e.g. symbol_rate=0.1,
    rolloff=0.35, cfo=0.0); impairments=False switches off every channel and receiver impairment.
    keep_clean: also return the noise-free recording (same channel and receiver), for measurements.
    """
    _check_request(label, n_samples, snr_db)
    if not overrides.pop("impairments", True):
        overrides = {**NO_IMPAIRMENTS, **overrides}
    draws = Draws(rng, overrides)

    if label == NOISE:
        signal = np.zeros(n_samples, dtype=np.complex64)
        snr_db = math.nan
        noise_variance = 1.0
    else:
        synthesis = _synthesize(label, n_samples, draws)
        draws.record("bandwidth", synthesis.bandwidth)
        signal = fading(multipath(synthesis.signal, draws), draws)[:n_samples]
        # unit power from here on; single precision suffices (the recording is complex64)
        signal = frequency_offset(signal, draws, gain=1 / np.sqrt(_power(signal)))
        if snr_db is None:
            snr_db = float(rng.uniform(*SNR_RANGE))
        noise_variance = 10 ** (-snr_db / 10) / synthesis.bandwidth
    receiver = draw_receiver(draws)
    draws.check_all_used(label)

    received = receiver.iq_imbalance(signal + awgn(n_samples, noise_variance, rng))
    dc = np.complex64(receiver.dc_relative * np.sqrt(_power(received)))
    received += dc
    scale = np.float32(10 ** (receiver.level_db / 20) / np.sqrt(_power(received)))
    clean = None
    if keep_clean:
        clean = (receiver.iq_imbalance(signal) + dc) * scale
    return Example(
        iq=received * scale,
        label=label,
        snr_db=float(snr_db),
        params=draws.params,
        clean=clean,
    )
