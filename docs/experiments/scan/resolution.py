"""How close two signals can be and still be found as two (preprocessing.emissions).

Two tones of equal power in white noise, at a per-bin SNR (tone power over the noise in one Welch
bin) of 10 to 60 dB, a frame of 32,768 samples (Welch bins of 1/1,024 of the band); their
spacing grows in steps of one bin. Per SNR: the smallest spacing at which every one of 20 frames
shows two signals. GAP_FRACTION, the gap find_emissions bridges, is 16 bins here; what the tones'
skirts (the Hann window's leakage, then the smoothing) add to each side comes on top of it.

    python docs/experiments/scan/resolution.py      # 2 vCPUs, about 30 s
"""

from __future__ import annotations

import numpy as np
import torch

from preprocessing.emissions import GAP_FRACTION, find_emissions
from preprocessing.occupancy import welch_size

SAMPLES = 32_768
FRAMES = 20


def two_tones(rng: np.random.Generator, spacing: float, snr_db: float) -> np.ndarray:
    bins = welch_size(SAMPLES)
    noise_power = bins * 10 ** (-snr_db / 10)  # the noise in one of `bins` bins is 10^(-snr/10)
    t = np.arange(SAMPLES)
    x = np.sqrt(noise_power / 2) * (
        rng.standard_normal(SAMPLES) + 1j * rng.standard_normal(SAMPLES)
    )
    for f in (0.1, 0.1 + spacing):
        x = x + np.exp(2j * np.pi * (f * t + rng.uniform()))
    return x.astype(np.complex64)


def main() -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    bins = welch_size(SAMPLES)
    print(f"{SAMPLES} samples, Welch bins of 1/{bins}; GAP_FRACTION = {GAP_FRACTION * bins:g} bins")
    print(f"{'SNR per bin':>12} {'two signals from':>17}")
    for snr_db in (10, 20, 30, 40, 50, 60):
        for spacing_bins in range(2, 129):
            frames = np.stack([two_tones(rng, spacing_bins / bins, snr_db) for _ in range(FRAMES)])
            found = find_emissions(torch.from_numpy(frames))
            if all(len(row) == 2 for row in found):
                share = f"1/{bins / spacing_bins:.0f} of the band"
                print(f"{snr_db:>9} dB {spacing_bins:>8} bins = {share}")
                break


if __name__ == "__main__":
    main()
