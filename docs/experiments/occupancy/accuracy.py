"""How well preprocessing.occupancy measures a frame's signal.

Two sets, 200 frames per row:
- flat bands: Gaussian noise flat over a known band, in white noise at a known in-band SNR (the
  truth is exact: centre, 99 % bandwidth = 0.99 x the band, SNR);
- rfmodel.data's classes with every channel and receiver impairment (multipath, fading, carrier
  offset, IQ imbalance, DC offset), against the generator's carrier offset, nominal bandwidth
  (symbol rate x (1 + roll-off), Carson's rule, ...) and in-band SNR.

Prints, per row, the median and 95th percentile of |error| (centre, in Welch bins and in
cycles/sample), the median measured bandwidth over the true (flat) or nominal (generator) one,
the median and 95th percentile of the SNR error, and how often nothing was found.

    python docs/experiments/occupancy/accuracy.py          # 2 vCPUs, about a minute
"""

from __future__ import annotations

import numpy as np
import torch

from preprocessing.occupancy import occupied_band, welch_size
from rfmodel.data import generate_example

FRAMES = 200


def white(rng: np.random.Generator, n: int, power: float) -> np.ndarray:
    return np.sqrt(power / 2) * (rng.standard_normal(n) + 1j * rng.standard_normal(n))


def band_noise(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    spectrum = np.fft.fft(white(rng, n, 1.0))
    freqs = np.fft.fftfreq(n)
    spectrum[(freqs < low) | (freqs >= high)] = 0
    x = np.fft.ifft(spectrum)
    return x / np.sqrt(np.mean(np.abs(x) ** 2))


def row(name: str, n: int, measured: np.ndarray, center, bandwidth, snr) -> str:
    found = ~np.isnan(measured[:, 0])
    m = measured[found]
    bins = welch_size(n)
    center_error = np.abs(m[:, 0] - center[found])
    snr_error = m[:, 2] - snr[found]
    return (
        f"{name:<28} {n:>6} | centre {np.median(center_error) * bins:5.2f} / "
        f"{np.percentile(center_error, 95) * bins:5.2f} bins | width ratio "
        f"{np.median(m[:, 1] / bandwidth[found]):5.2f} | SNR error {np.median(snr_error):+5.2f} / "
        f"{np.percentile(np.abs(snr_error), 95):4.2f} dB | none {1 - found.mean():4.0%}"
    )


def flat_bands(rng: np.random.Generator) -> None:
    print("flat bands in white noise: median / 95th percentile of |error|")
    for n, low, high, snr_db in [
        (4096, -0.3, 0.1, 3.0),
        (32768, -0.3, 0.1, 3.0),
        (32768, -0.3, 0.1, 0.0),
        (4096, 0.05, 0.08, 10.0),
        (32768, 0.05, 0.08, 10.0),
        (32768, -0.4, 0.35, 3.0),
    ]:
        width = high - low
        noise = 10 ** (-snr_db / 10) / width
        x = np.stack([band_noise(rng, n, low, high) + white(rng, n, noise) for _ in range(FRAMES)])
        measured = occupied_band(torch.from_numpy(x.astype(np.complex64))).numpy()
        ones = np.ones(FRAMES)
        name = f"[{low:+.2f}, {high:+.2f}) at {snr_db:g} dB"
        print(row(name, n, measured, ones * (low + high) / 2, ones * 0.99 * width, ones * snr_db))


def generated(rng: np.random.Generator) -> None:
    print("rfmodel.data, impairments as generated: width ratio is measured 99 % / nominal")
    for label in ("bpsk", "qpsk", "16qam", "ook", "2fsk", "gmsk", "am", "fm", "ofdm"):
        for snr_db in (3.0, 10.0, 20.0):
            n = 32768
            examples = [generate_example(label, n, rng, snr_db=snr_db) for _ in range(FRAMES)]
            x = np.stack([e.iq for e in examples])
            measured = occupied_band(torch.from_numpy(x)).numpy()
            cfo = np.array([e.params["cfo"] for e in examples])
            nominal = np.array([e.params["bandwidth"] for e in examples])
            snr = np.full(FRAMES, snr_db)
            print(row(f"{label} at {snr_db:g} dB", n, measured, cfo, nominal, snr))


if __name__ == "__main__":
    rng = np.random.default_rng(2026_12_07)
    flat_bands(rng)
    generated(rng)
