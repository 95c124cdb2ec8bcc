"""A scan: every signal in each frame found and cut out to baseband, so that each can be
classified on its own (preprocessing.emissions). The cut-outs go to the engine as frames."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from preprocessing.emissions import Emission, baseband, find_emissions

# how long a cut-out grows where no other signal is near: the recording length the shipped
# models were evaluated at (preprocessing.emissions.baseband_length)
MIN_CUT_SAMPLES = 4096


@dataclass(frozen=True)
class FrameSignals:
    emissions: list[Emission]  # in the frame's own frequencies, in order of frequency
    cuts: list[np.ndarray]  # each emission at baseband, complex64


def signals_in(frames: Sequence[np.ndarray], max_signals: int, shortest: int) -> list[FrameSignals]:
    """Each frame's signals, the max_signals strongest (by in-band SNR) where it has more, each
    cut out clear of all the others found and at least `shortest` samples long (the model's
    FFT: a shorter cut-out is one the model cannot take)."""
    found = []
    for iq in frames:
        (everything,) = find_emissions(torch.from_numpy(iq)[None])
        kept = everything
        if len(everything) > max_signals:
            strongest = sorted(everything, key=lambda e: e.snr_db, reverse=True)[:max_signals]
            kept = sorted(strongest, key=lambda e: e.center)
        cuts = baseband(iq, kept, everything, MIN_CUT_SAMPLES, shortest)
        found.append(FrameSignals(kept, cuts))
    return found
