"""The band-limited view (preprocessing.band) against a float64 reference built on scipy's Welch
spectrum, and what it is for: a narrow signal's in-band SNR back, its x^4 line out of the noise."""

import dataclasses

import numpy as np
import pytest
import scipy.signal
import torch
from test_feature_frames import random_complex
from test_recording_features import MIXED, reference_recording

from preprocessing.band import FLOOR_MARGIN, band_gain, band_limited
from preprocessing.features import NOISE_QUANTILE, FeatureConfig
from preprocessing.recording import recording_features


def reference_gain(x, nfft, window):
    """The module docstring in numpy float64: Welch spectrum (scipy), floor from its quantile."""
    _, psd = scipy.signal.welch(
        x, window=window, nperseg=nfft, noverlap=nfft // 2, detrend=False, return_onesided=False
    )
    psd = np.fft.fftshift(psd)
    k = max(1, int(NOISE_QUANTILE * nfft))
    floor = np.sort(psd)[k - 1] * FLOOR_MARGIN
    return np.where(psd > floor, 1 - floor / psd, 0.0)


def reference_band_limited(x, nfft, window):
    """Each segment's DFT times the gain of the Welch bin nearest each of its bins (a bin half
    way between two takes the upper one's)."""
    gain = reference_gain(x, nfft, window)
    n = x.size
    index = np.rint(np.fft.fftfreq(n) * n).astype(int)  # each DFT bin's, signed
    # nearest: floor(index * nfft / n + 1/2), in integers, where floats would split the ties
    welch_bin = (2 * index * nfft + n) // (2 * n) % nfft  # natural order
    y = np.fft.ifft(np.fft.fft(x) * np.fft.ifftshift(gain)[welch_bin])
    return y / np.sqrt(np.mean(np.abs(y) ** 2))


def narrow_qpsk(rng, n, samples_per_symbol, snr_db):
    """QPSK with rectangular pulses low-passed to about 1 / samples_per_symbol of the band, at
    the given SNR inside that band; returns (noisy, clean)."""
    symbols = np.exp(1j * (np.pi / 4 + np.pi / 2 * rng.integers(0, 4, n // samples_per_symbol)))
    spectrum = np.fft.fft(symbols.repeat(samples_per_symbol))
    spectrum[np.abs(np.fft.fftfreq(n)) > 0.5 / samples_per_symbol] = 0
    clean = np.fft.ifft(spectrum) * np.exp(2j * np.pi * 0.11 * np.arange(n))
    clean /= np.sqrt(np.mean(np.abs(clean) ** 2))
    in_band_noise = 10 ** (-snr_db / 10)
    noise_power = in_band_noise * samples_per_symbol  # white over the whole band
    noise = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) * np.sqrt(noise_power / 2)
    return clean + noise, clean


@pytest.mark.parametrize(
    ("n", "nfft", "window"),
    # odd nfft: DC is not half way along the centred bins
    [(4096, 256, "hann"), (512, 32, "blackman"), (496, 31, "hann"), (744, 31, "blackman")],
)
def test_matches_float64_reference(n, nfft, window):
    rng = np.random.default_rng(n)
    x, _ = narrow_qpsk(rng, n, 8, 5.0)
    x = x * 3.7  # the gain is relative: any input level
    unit = x / np.sqrt(np.mean(np.abs(x) ** 2))
    gain = band_gain(torch.from_numpy(unit)[None], nfft, window)[0]
    np.testing.assert_allclose(gain.numpy(), reference_gain(x, nfft, window), atol=1e-9)
    ours = band_limited(torch.from_numpy(x)[None], nfft, window)[0]
    np.testing.assert_allclose(ours.numpy(), reference_band_limited(x, nfft, window), atol=1e-9)


def test_a_narrow_signal_gets_its_in_band_snr_back():
    """QPSK filling an eighth of the band at 0 dB in-band SNR is at -9 dB over the whole band;
    filtered, it is within a few dB of the in-band figure."""
    rng = np.random.default_rng(1)
    x, clean = narrow_qpsk(rng, 4096, 8, 0.0)
    y = band_limited(torch.from_numpy(x)[None], 256, "hann")[0].numpy()
    scale = np.vdot(clean, y) / np.vdot(clean, clean)  # y's part that is the signal
    residual = y - scale * clean
    snr_db = 10 * np.log10(np.abs(scale) ** 2 / np.mean(np.abs(residual) ** 2))
    assert -10 < 10 * np.log10(1 / (np.mean(np.abs(x - clean) ** 2))) < -8
    assert snr_db > -3


def test_the_band_view_lifts_a_narrow_signals_x4_line():
    """The line's height over the median bin of the sorted x^4 spectrum: about 11 dB in the
    plain view of QPSK filling a sixteenth of the band at 5 dB in-band SNR, 21 in the band view."""
    rng = np.random.default_rng(2)
    x, _ = narrow_qpsk(rng, 4096, 16, 5.0)
    cfg = FeatureConfig(recording_band_limit=True)
    features = recording_features(torch.from_numpy(x)[None], cfg)[0]
    x4 = features.unflatten(-1, (2, len(cfg.transforms), cfg.nfft))[:, cfg.transforms.index("x4")]
    plain, band = x4[:, 0] - x4[:, cfg.nfft // 2]
    assert plain > 6 and band > plain + 6


def test_recording_features_gain_a_second_view_of_the_band_limited_segments():
    cfg = dataclasses.replace(MIXED, recording_band_limit=True)
    assert cfg.recording_views == 2
    rng = np.random.default_rng(3)
    x = random_complex(rng, (2, 1000))
    ours = recording_features(torch.from_numpy(x), cfg)
    assert ours.shape == (2, 2 * cfg.n_features)
    segment, used = cfg.recording_segment, 7 * cfg.recording_segment
    for b in range(2):
        segments = x[b, :used].reshape(-1, segment)
        band = np.concatenate([reference_band_limited(s, cfg.nfft, cfg.window) for s in segments])
        views = (reference_recording(x[b], MIXED), reference_recording(band, MIXED))
        expected = np.concatenate(views)
        np.testing.assert_allclose(ours[b].numpy(), expected, rtol=1e-5, atol=1e-4)


def test_silence_stays_finite():
    zeros = torch.zeros(2, 4096, dtype=torch.complex64)
    assert not band_limited(zeros, 256, "hann").any()
    cfg = FeatureConfig(recording_band_limit=True)
    assert torch.isfinite(recording_features(zeros, cfg)).all()
