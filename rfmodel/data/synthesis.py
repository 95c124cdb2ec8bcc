"""What every modulator returns."""

from dataclasses import dataclass

import numpy as np


@dataclass
class Synthesis:
    signal: np.ndarray  # complex [period], one period of a periodic baseband signal at fs = 1
    bandwidth: float  # nominal occupied bandwidth, cycles/sample: the band the in-band SNR uses


MIN_SPS = 2.0
MAX_SPS = 32.0
# widest nominal band any class may occupy, so that +-10 % fs of carrier offset keeps it inside fs
MAX_BANDWIDTH = 0.76
