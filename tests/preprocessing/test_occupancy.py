"""The occupied-band measurements against scipy's Welch spectrum and against signals whose band,
centre and SNR are known by construction."""

import numpy as np
import pytest
import torch
from known_signals import band_noise, white
from scipy import signal as sps

from preprocessing.occupancy import (
    FLOOR_QUANTILE,
    WINDOW,
    noise_statistics,
    occupied_band,
    welch_size,
    welch_spectrum,
)
from preprocessing.spectra import window_array

RNG = np.random.default_rng(21)


def measure(x: np.ndarray) -> np.ndarray:
    return occupied_band(torch.from_numpy(np.atleast_2d(x).astype(np.complex64))).numpy()


@pytest.mark.parametrize("n", [256, 5000, 32768])
def test_welch_spectrum_matches_scipy(n):
    x = white(RNG, n, rows=3)
    size = welch_size(n)
    got = welch_spectrum(torch.from_numpy(x), size).numpy()
    _, expected = sps.welch(
        x,
        window=window_array(WINDOW, size),
        nperseg=size,
        noverlap=size // 2,
        detrend=False,
        return_onesided=False,
        scaling="density",
        axis=-1,
    )
    # scipy's density at fs = 1 over the window's energy; ours sums to the power over M bins
    np.testing.assert_allclose(got, np.fft.fftshift(expected, axes=-1) / size, rtol=1e-10)
    np.testing.assert_allclose(got.sum(-1), np.mean(np.abs(x) ** 2, -1), rtol=0.15)


@pytest.mark.parametrize("n", [256, 4096, 32768])
def test_white_noise_rarely_shows_a_signal(n):
    """The threshold is set for one frame in a thousand; 400 frames should show at most a few."""
    found = ~np.isnan(measure(white(RNG, n, rows=400))[:, 0])
    assert found.sum() <= 3


def test_the_noise_quantile_matches_white_noise():
    n = 4096
    size = welch_size(n)
    quantile, threshold = noise_statistics(n, size)
    p = welch_spectrum(torch.from_numpy(white(RNG, n, rows=2000)), size).numpy() * size  # mean 1
    k = max(1, int(FLOOR_QUANTILE * size))
    observed = np.sort(p, axis=-1)[:, k - 1]
    assert np.median(observed) == pytest.approx(quantile, rel=0.03)
    assert (p.max(-1) > threshold).mean() < 0.004


@pytest.mark.parametrize(
    ("n", "low", "high", "snr_db", "snr_tolerance"),
    [
        (4096, -0.3, 0.1, 3.0, 1.1),
        (32768, -0.3, 0.1, 3.0, 0.4),
        (32768, 0.05, 0.08, 10.0, 0.4),  # 31 Welch bins wide
        (32768, -0.4, 0.35, 3.0, 0.4),  # three quarters of the band, as the widest training signals
    ],
)
def test_a_flat_band_in_white_noise(n, low, high, snr_db, snr_tolerance):
    width = high - low
    noise_power = 10 ** (-snr_db / 10) / width  # in-band SNR: signal over noise within the band
    x = band_noise(RNG, n, low, high, 1.0) + white(RNG, n, power=noise_power)[0]
    center, bandwidth, snr = measure(x)[0]
    bins = 1 / welch_size(n)
    # each tolerance is about four standard deviations over 200 draws (the noise moves every bin)
    assert center == pytest.approx((low + high) / 2, abs=1.5 * bins + 0.02 * width)
    assert bandwidth == pytest.approx(0.99 * width, abs=1.5 * bins + 0.01 * width)
    assert snr == pytest.approx(snr_db, abs=snr_tolerance)


def test_a_band_across_the_edge_of_the_spectrum_is_one_span():
    """The spectrum is circular: a band from 0.42 round to -0.42 (past +-0.5) is 0.16 wide,
    centred on the edge, and a tone by the edge is as narrow as anywhere else."""
    n = 32768
    spectrum = np.fft.fft(white(RNG, n)[0])
    freqs = np.fft.fftfreq(n)
    spectrum[np.abs(freqs) < 0.42] = 0
    band = np.fft.ifft(spectrum)
    band /= np.sqrt(np.mean(np.abs(band) ** 2))
    center, bandwidth, snr = measure(band + white(RNG, n, power=0.1 / 0.16)[0])[0]
    assert min(abs(center - 0.5), abs(center + 0.5)) < 2 / welch_size(n)
    assert bandwidth == pytest.approx(0.99 * 0.16, abs=2 / welch_size(n))
    assert snr == pytest.approx(10, abs=0.5)
    tone = np.exp(2j * np.pi * 0.495 * np.arange(n)) + white(RNG, n, power=1e-2)[0]
    center, bandwidth, _ = measure(tone)[0]
    assert center == pytest.approx(0.495, abs=1 / welch_size(n))
    assert bandwidth < 4 / welch_size(n)


def test_a_band_a_few_bins_wide_reads_wider():
    """Under about ten Welch bins the window's leakage widens the band (module docstring)."""
    n, low, high = 4096, 0.05, 0.08  # 3.8 bins of 128
    x = band_noise(RNG, n, low, high, 1.0) + white(RNG, n, power=0.1 / (high - low))[0]
    center, bandwidth, snr = measure(x)[0]
    assert center == pytest.approx(0.065, abs=1 / 128)
    assert 1.1 * (high - low) < bandwidth < (high - low) + 3 / 128
    assert 7 < snr < 10


def test_a_tone_is_one_narrow_line_at_its_frequency():
    n = 32768
    t = np.arange(n)
    tone = np.exp(2j * np.pi * 0.1234 * t) + white(RNG, n, power=1e-3)[0]
    center, bandwidth, snr = measure(tone)[0]
    assert center == pytest.approx(0.1234, abs=2e-4)
    assert bandwidth < 4 / welch_size(n)  # the Hann window's main lobe
    assert snr > 30


def test_gain_does_not_change_the_answer_and_silence_has_none():
    x = band_noise(RNG, 8192, -0.1, 0.2, 1.0) + white(RNG, 8192, power=0.1)[0]
    ref = measure(x)
    for gain in (1e-20, 1e20):
        np.testing.assert_allclose(measure(x * gain), ref, rtol=1e-4, atol=1e-6)
    assert np.isnan(measure(np.zeros(4096))).all()


def test_too_short_to_measure():
    assert np.isnan(measure(white(RNG, 255, rows=2))).all()
