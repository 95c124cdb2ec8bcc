"""Textbook properties of the synthetic signals, checked with independent references: a matched
filter written here from the raised-cosine formula, scipy's Welch PSD, instantaneous frequency."""

import math

import numpy as np
import pytest
from scipy import signal

from rfmodel.data import generate_example

REFERENCE_POINTS = {
    "bpsk": np.array([1, -1], dtype=complex),
    "qpsk": np.array([1 + 1j, 1 - 1j, -1 + 1j, -1 - 1j]) / np.sqrt(2),
    "8psk": np.exp(2j * np.pi * np.arange(8) / 8),
    "16qam": np.array([a + 1j * b for a in (-3, -1, 1, 3) for b in (-3, -1, 1, 3)]) / np.sqrt(10),
    "64qam": np.array([a + 1j * b for a in range(-7, 8, 2) for b in range(-7, 8, 2)]) / np.sqrt(42),
    "4ask": np.array([-3, -1, 1, 3], dtype=complex) / np.sqrt(5),
    "ook": np.array([0, np.sqrt(2)], dtype=complex),
}


def raised_cosine(f, symbol_rate, rolloff):
    """Raised-cosine spectrum (Proakis), f in cycles/sample."""
    f = np.abs(f)
    lo, hi = (1 - rolloff) * symbol_rate / 2, (1 + rolloff) * symbol_rate / 2
    out = np.where(f <= lo, 1.0, 0.0)
    band = (f > lo) & (f <= hi)
    return np.where(band, 0.5 * (1 + np.cos(np.pi / (rolloff * symbol_rate) * (f - lo))), out)


def matched_filter_symbols(iq, sps, rolloff, timing):
    """Matched-filter with an RRC (sqrt of the raised cosine) and read the output at the symbol
    instants (k + timing) * sps by exact trigonometric interpolation of the periodic output."""
    n = len(iq)
    f = np.fft.fftfreq(n)
    spectrum = np.fft.fft(iq.astype(np.complex128)) * np.sqrt(raised_cosine(f, 1 / sps, rolloff))
    times = (np.arange(int(n / sps) - 1) + timing) * sps
    band = spectrum != 0
    return np.exp(2j * np.pi * np.outer(times, f[band])) @ spectrum[band] / n


@pytest.mark.parametrize("label", list(REFERENCE_POINTS))
@pytest.mark.parametrize("span", [0, 12])
def test_matched_filter_recovers_the_constellation(label, span):
    rng = np.random.default_rng(21)
    ex = generate_example(
        label,
        4096,
        rng,
        snr_db=math.inf,
        impairments=False,
        symbol_rate=0.23,
        pulse_span_symbols=span,
    )
    p = ex.params
    assert abs(p["samples_per_symbol"] - 1 / 0.23) < 0.01
    y = matched_filter_symbols(ex.iq, p["samples_per_symbol"], p["rolloff"], p["timing_offset"])
    ref = REFERENCE_POINTS[label]
    y = y / np.sqrt(np.mean(np.abs(y) ** 2))  # matched-filter gain; the symbols have unit power
    nearest = ref[np.argmin(np.abs(y[:, None] - ref[None, :]), axis=1)]
    # least-squares gain against the decisions, then the error vector magnitude
    y = y * np.vdot(y, nearest).real / np.vdot(y, y).real
    evm_db = 10 * np.log10(np.mean(np.abs(y - nearest) ** 2))
    assert evm_db < (-60 if span == 0 else -30)
    assert len(np.unique(np.round(nearest, 6))) == len(ref)  # every cluster is there
    min_distance = np.min(np.abs(ref[:, None] - ref[None, :]) + 9 * np.eye(len(ref)))
    assert np.max(np.abs(y - nearest)) < 0.25 * min_distance  # tight, separate clusters
    assert np.mean(np.abs(ref) ** 2) == pytest.approx(1.0)


def psd(iq, nperseg=1024):
    f, p = signal.welch(iq, nperseg=nperseg, return_onesided=False, detrend=False)
    order = np.argsort(f)
    return f[order], p[order]


def power_bandwidth(f, p, fraction=0.99):
    cum = np.cumsum(p) / np.sum(p)
    lo = f[np.searchsorted(cum, (1 - fraction) / 2)]
    hi = f[np.searchsorted(cum, 1 - (1 - fraction) / 2)]
    return hi - lo


@pytest.mark.parametrize(("rolloff", "span"), [(0.2, 0), (0.35, 0), (0.5, 0), (0.35, 10)])
def test_rrc_occupied_bandwidth(rolloff, span):
    symbol_rate = 0.17
    ex = generate_example(
        "qpsk", 1 << 16, np.random.default_rng(6), snr_db=math.inf, impairments=False,
        symbol_rate=symbol_rate, rolloff=rolloff, pulse_span_symbols=span,
    )  # fmt: skip
    f, p = psd(ex.iq)
    measured = power_bandwidth(f, p)
    # the 99 % bandwidth of the raised-cosine PSD itself, by numerical integration
    fine = np.linspace(-0.5, 0.5, 200001)
    expected = power_bandwidth(fine, raised_cosine(fine, symbol_rate, rolloff))
    assert measured == pytest.approx(expected, rel=0.04)
    assert symbol_rate <= measured <= symbol_rate * (1 + rolloff) * 1.02
    assert ex.params["bandwidth"] == pytest.approx(symbol_rate * (1 + rolloff), rel=0.01)


def test_discontinuous_2fsk_has_tones_at_plus_minus_deviation():
    ex = generate_example(
        "2fsk", 1 << 15, np.random.default_rng(7), snr_db=20.0, impairments=False,
        modulation_index=2.0, symbol_rate=0.04, continuous_phase=False,
    )  # fmt: skip
    deviation = 2.0 * 0.04 / 2
    f, p = psd(ex.iq, nperseg=2048)
    top_two = np.sort(f[np.argsort(p)[-2:]])
    np.testing.assert_allclose(top_two, [-deviation, deviation], atol=2 / 2048)


def instantaneous_frequency(iq):
    return np.angle(iq[1:] * np.conj(iq[:-1])) / (2 * np.pi)


@pytest.mark.parametrize(
    ("label", "overrides"),
    [
        ("2fsk", {"modulation_index": 1.0, "continuous_phase": True}),
        ("gfsk", {"modulation_index": 0.35, "bt": 0.5}),
        ("gmsk", {"bt": 0.3}),
    ],
)
def test_fsk_frequency_deviation(label, overrides):
    ex = generate_example(
        label, 1 << 15, np.random.default_rng(9), snr_db=math.inf, impairments=False,
        symbol_rate=0.05, **overrides,
    )  # fmt: skip
    h = ex.params["modulation_index"]
    deviation = h * ex.params["symbol_rate"] / 2
    f_inst = instantaneous_frequency(ex.iq.astype(np.complex128))
    # long runs of one bit reach the full deviation, on both sides, and never beyond
    assert np.max(f_inst) == pytest.approx(deviation, rel=0.01)
    assert np.min(f_inst) == pytest.approx(-deviation, rel=0.01)
    if label == "2fsk":  # rectangular pulses: the tone frequencies except at the boundaries
        assert np.mean(np.abs(np.abs(f_inst) - deviation) < 1e-6) > 0.9
    else:  # Gaussian pulses: the frequency moves smoothly between the tones
        assert np.max(np.abs(np.diff(f_inst))) < 0.5 * deviation
        assert np.mean(np.abs(f_inst) < 0.5 * deviation) > 0.05


def test_am_has_a_carrier_line():
    ex = generate_example(
        "am", 1 << 16, np.random.default_rng(10), snr_db=15.0, impairments=False,
        message="noise", message_bandwidth=0.05, modulation_depth=0.8,
    )  # fmt: skip
    f, p = psd(ex.iq)
    peak = np.argmax(p)
    assert abs(f[peak]) < 1e-9
    sidebands = (np.abs(f) > 0.005) & (np.abs(f) < 0.04)
    assert 10 * np.log10(p[peak] / np.median(p[sidebands])) > 15


@pytest.mark.parametrize("label", ["bpsk", "64qam", "ook", "gfsk", "2fsk", "am", "fm", "ofdm"])
@pytest.mark.parametrize("snr_db", [-8.0, 5.0, 25.0])
def test_in_band_snr_matches_request(label, snr_db):
    """Signal power from the noise-free copy; noise power inside the nominal band from Welch's PSD
    of the difference, integrated over [cfo - B/2, cfo + B/2]. 2**18 samples hold enough noise in
    even the narrowest band (B >= 0.004) for a ~0.1 dB estimate."""
    seed = int(snr_db * 10) + 1000 + len(label)
    ex = generate_example(
        label, 1 << 18, np.random.default_rng(seed), snr_db=snr_db, keep_clean=True,
        dc_offset_db=None, iq_gain_db=0.0, iq_phase_deg=0.0,
    )  # fmt: skip
    clean = ex.clean.astype(np.complex128)
    noise = ex.iq.astype(np.complex128) - clean
    f, density = psd(noise, nperseg=4096)
    p = ex.params
    half = p["bandwidth"] / 2
    in_band = np.abs(f - p["cfo"]) <= half
    noise_in_band = np.mean(density[in_band]) * p["bandwidth"]
    measured = 10 * np.log10(np.mean(np.abs(clean) ** 2) / noise_in_band)
    assert measured == pytest.approx(snr_db, abs=0.5)
