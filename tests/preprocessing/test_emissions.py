"""Several signals in one frame: found one by one against bands whose centre, width and SNR are
known by construction, and cut out to baseband against scipy's Fourier resampler."""

import math

import numpy as np
import pytest
import torch
from known_signals import band_noise, white
from scipy import signal as sps

from preprocessing.emissions import (
    FILL,
    GAP_FRACTION,
    Emission,
    baseband,
    baseband_length,
    find_emissions,
)
from preprocessing.occupancy import occupied_band, welch_size

RNG = np.random.default_rng(34)


def found(x: np.ndarray) -> list[Emission]:
    (row,) = find_emissions(torch.from_numpy(np.asarray(x, np.complex64)[None]))
    return row


def in_band_noise(width: float, snr_db: float) -> float:
    """White noise power that puts a unit-power band of this width at this in-band SNR."""
    return 10 ** (-snr_db / 10) / width


def test_three_bands_are_three_signals_each_measured():
    n = 65536
    bands = [(-0.41, -0.33, 10.0), (-0.05, 0.07, 3.0), (0.2, 0.22, 20.0)]
    x = white(RNG, n, power=1.0)[0]
    for low, high, snr_db in bands:
        width = high - low
        # unit noise density: the band's power sets its in-band SNR
        x = x + band_noise(RNG, n, low, high, 10 ** (snr_db / 10) * width)
    emissions = found(x)
    assert len(emissions) == 3
    bin_width = 1 / welch_size(n)
    for e, (low, high, snr_db) in zip(emissions, bands, strict=True):
        width = high - low
        assert e.center == pytest.approx((low + high) / 2, abs=1.5 * bin_width + 0.02 * width)
        assert e.bandwidth == pytest.approx(0.99 * width, abs=2 * bin_width + 0.01 * width)
        assert e.snr_db == pytest.approx(snr_db, abs=0.6)


def test_one_band_reads_as_occupied_band_reads_the_frame():
    n = 16384
    x = band_noise(RNG, n, -0.2, 0.1, 1.0) + white(RNG, n, power=in_band_noise(0.3, 6.0))[0]
    (e,) = found(x)
    center, bandwidth, snr_db = occupied_band(torch.from_numpy(x[None].astype(np.complex64)))[0]
    bin_width = 1 / welch_size(n)
    assert e.center == pytest.approx(float(center), abs=bin_width)
    assert e.bandwidth == pytest.approx(float(bandwidth), abs=2 * bin_width)
    assert e.snr_db == pytest.approx(float(snr_db), abs=0.3)


def test_a_wide_signal_below_0_db_stays_one_signal():
    """At -3 dB in-band over half the band most of its bins are under the detection threshold,
    and farther apart than GAP_FRACTION: the smoothed extent keeps them together (without it,
    about half of these frames read as two to six signals)."""
    n = 32768
    hits = []
    for _ in range(30):
        x = band_noise(RNG, n, -0.3, 0.2, 1.0) + white(RNG, n, power=in_band_noise(0.5, -3.0))[0]
        hits.append(len(found(x)))
    assert sum(h > 1 for h in hits) <= 3
    assert sum(h == 1 for h in hits) >= 18


def test_a_carrier_and_its_sidebands_are_one_signal_two_bands_apart_are_two():
    """Holes wider than the smoothing and narrower than GAP_FRACTION are bridged; wider ones
    part two signals. Also across the point where the walk round the circle starts: the last
    free bins in index order are a hole inside the signal that straddles +-0.5."""
    n = 32768
    bin_width = 1 / welch_size(n)
    hole = GAP_FRACTION - bin_width
    carrier = np.exp(2j * np.pi * 0.1 * np.arange(n))
    lower = band_noise(RNG, n, 0.1 - hole - 0.02, 0.1 - hole, 1.0)
    upper = band_noise(RNG, n, 0.1 + hole, 0.1 + hole + 0.02, 1.0)
    noise = white(RNG, n, power=1e-2)[0]
    (am,) = found(carrier + lower + upper + noise)
    assert am.center == pytest.approx(0.1, abs=2 * bin_width)
    apart = band_noise(RNG, n, -0.2, -0.15, 1.0) + band_noise(
        RNG, n, -0.15 + 2 * GAP_FRACTION, -0.05, 1.0
    )
    assert len(found(apart + noise)) == 2
    notched = band_noise(RNG, n, 0.4, 0.47 - hole, 1.0) + band_noise(RNG, n, 0.47, -0.4, 1.0)
    (across,) = found(notched + noise)
    assert min(abs(across.center - 0.5), abs(across.center + 0.5)) < 0.02


def test_a_band_across_the_edge_of_the_spectrum_is_one_signal():
    n = 32768
    x = band_noise(RNG, n, 0.45, -0.43, 1.0) + white(RNG, n, power=in_band_noise(0.12, 10.0))[0]
    (e,) = found(x)
    assert min(abs(e.center - 0.51), abs(e.center + 0.49)) < 2 / welch_size(n)
    assert e.bandwidth == pytest.approx(0.99 * 0.12, abs=2 / welch_size(n))
    assert e.snr_db == pytest.approx(10.0, abs=0.6)


def test_white_noise_rarely_shows_a_signal():
    frames = torch.from_numpy(white(RNG, 8192, rows=300).astype(np.complex64))
    assert sum(len(row) for row in find_emissions(frames)) <= 3


def test_gain_does_not_change_the_answer_and_short_frames_have_none():
    x = band_noise(RNG, 8192, -0.1, 0.2, 1.0) + white(RNG, 8192, power=0.1)[0]
    reference = found(x)
    assert len(reference) == 1
    for gain in (1e-20, 1e20):
        (e,) = found(x * gain)
        assert e.center == pytest.approx(reference[0].center, abs=1e-6)
        assert e.snr_db == pytest.approx(reference[0].snr_db, abs=1e-3)
    assert find_emissions(torch.from_numpy(white(RNG, 255, rows=2).astype(np.complex64))) == [
        [],
        [],
    ]


@pytest.mark.parametrize(
    ("center", "width", "neighbour"), [(0.3, 0.02, -0.2), (-0.45, 0.004, 0.1), (0.0, 0.2, -0.45)]
)
def test_baseband_is_the_band_brought_to_dc_as_scipy_resamples_it(center, width, neighbour):
    n = 32768
    x = band_noise(RNG, n, center - width / 2, center + width / 2, 1.0)
    x = x + band_noise(RNG, n, neighbour - 0.02, neighbour + 0.02, 1.0)  # outside the cut
    e = Emission(center=center, bandwidth=width, snr_db=20.0)
    (cut,) = baseband(x, [e], [e], min_samples=1024, shortest=64)
    keep = baseband_length(e, [], n, 1024, 64)
    assert cut.shape == (keep,) and cut.dtype == np.complex64
    # the reference: mix the centre's bin to 0 Hz exactly, then scipy's Fourier resampler, which
    # keeps the same bins (nothing lies on the new band's Nyquist bin, which it would halve)
    k0 = round(center * n)
    reference = sps.resample(x * np.exp(-2j * np.pi * k0 * np.arange(n) / n), keep)
    assert np.mean(np.abs(cut) ** 2) == pytest.approx(1.0, rel=1e-3)  # the band alone
    np.testing.assert_allclose(cut, reference, atol=1e-5 * np.abs(reference).max())


def test_baseband_length_fills_the_band_within_its_limits_and_keeps_neighbours_out():
    def length(bandwidth: float, *others: tuple[float, float], center: float = 0.1) -> int:
        signal = Emission(center=center, bandwidth=bandwidth, snr_db=10.0)
        return baseband_length(signal, [Emission(c, w, 10.0) for c, w in others], 65536, 4096, 256)

    assert length(0.05) == math.ceil(0.05 * 65536 / FILL)
    assert length(1e-6) == 4096  # the minimum, where nothing is near
    assert length(0.5) == 65536  # never more than the frame had
    # a neighbour 0.02 away (edge to centre): the new band stops short of it
    assert length(1e-3, (0.13, 0.02)) == math.floor(2 * 0.02 * 65536)
    # round the circle: 0.49 to -0.49 is 0.02 apart, not 0.98
    assert length(1e-3, (-0.49, 0.0), center=0.49) == math.floor(2 * 0.02 * 65536)
    # too close to keep out at FILL: the signal's own fill wins
    assert length(0.01, (0.104, 0.002)) == math.ceil(0.01 * 65536 / FILL)
    # and never under the shortest cut-out the model takes, however close the neighbour
    assert length(1e-6, (0.1001, 0.0)) == 256


def test_signals_come_in_order_of_frequency_also_across_the_edge():
    """The walk round the circle starts after the last free bin; a signal across +-0.5 whose
    centre is positive is found first on that walk, and still comes last."""
    n = 32768
    x = white(RNG, n, power=1e-2)[0]
    for low, high in ((0.45, -0.49), (-0.32, -0.28), (0.18, 0.22)):
        x = x + band_noise(RNG, n, low, high, 1.0)
    centers = [e.center for e in found(x)]
    assert centers == sorted(centers) and len(centers) == 3
    assert centers[-1] == pytest.approx(0.48, abs=0.01)
