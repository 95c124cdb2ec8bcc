"""rfmodel.data.generate_example: determinism, lengths, dtypes, levels, overrides and errors."""

import math

import numpy as np
import pytest

from rfmodel.data import CLASSES, SNR_RANGE, generate_example
from rfmodel.data.draws import UnknownOverride


@pytest.mark.parametrize("label", CLASSES)
def test_same_seed_same_bytes_other_seed_differs(label):
    a = generate_example(label, 4096, np.random.default_rng(11))
    b = generate_example(label, 4096, np.random.default_rng(11))
    c = generate_example(label, 4096, np.random.default_rng(12))
    assert a.iq.tobytes() == b.iq.tobytes()
    assert a.params == b.params
    assert a.iq.tobytes() != c.iq.tobytes()


@pytest.mark.parametrize("label", CLASSES)
def test_recording_is_complex64_finite_at_its_level(label):
    ex = generate_example(label, 4096, np.random.default_rng(3))
    assert ex.iq.dtype == np.complex64 and ex.iq.shape == (4096,)
    assert np.isfinite(ex.iq).all()
    rms_db = 10 * np.log10(np.mean(np.abs(ex.iq.astype(np.complex128)) ** 2))
    assert rms_db == pytest.approx(ex.params["level_db"], abs=0.01)
    assert ex.label == label
    if label == "noise":
        assert math.isnan(ex.snr_db)
    else:
        assert SNR_RANGE[0] <= ex.snr_db <= SNR_RANGE[1]
        assert 0 < ex.params["bandwidth"] <= 0.76


@pytest.mark.parametrize(
    ("label", "n_samples"),
    [("qpsk", 5003), ("gfsk", 4097), ("ofdm", 7919), ("fm", 1 << 20), ("16qam", 1 << 20)],
)
def test_any_length(label, n_samples):
    ex = generate_example(label, n_samples, np.random.default_rng(5), snr_db=10.0)
    assert ex.iq.shape == (n_samples,) and ex.iq.dtype == np.complex64
    assert np.isfinite(ex.iq).all()
    # the signal spans the whole recording: no silent stretch at either end
    quarters = np.abs(ex.iq.reshape(-1)[: n_samples // 4 * 4].reshape(4, -1)) ** 2
    powers = quarters.mean(axis=1)
    assert powers.min() > 0.2 * powers.max()


def test_levels_span_orders_of_magnitude():
    rng = np.random.default_rng(8)
    levels = [
        10 * np.log10(np.mean(np.abs(generate_example("bpsk", 1024, rng).iq) ** 2))
        for _ in range(60)
    ]
    assert max(levels) - min(levels) > 50  # dB


def test_symbol_periods_are_fractional():
    rng = np.random.default_rng(4)
    for label in ("qpsk", "2fsk", "gmsk"):
        for _ in range(40):
            sps = generate_example(label, 4096, rng).params["samples_per_symbol"]
            assert 2.0 <= sps <= 32.0 + 1e-9
            assert abs(sps - round(sps)) > 1e-9


def test_impairments_off_gives_ideal_receiver():
    ex = generate_example("qpsk", 4096, np.random.default_rng(1), impairments=False)
    p = ex.params
    assert p["multipath"] is False and p["fading"] is False
    assert p["cfo"] == 0.0 and p["phase"] == 0.0 and p["dc_offset_db"] is None
    assert p["iq_gain_db"] == 0.0 and p["iq_phase_deg"] == 0.0 and p["level_db"] == 0.0


def test_overrides_are_used_and_recorded():
    ex = generate_example("bpsk", 4096, np.random.default_rng(1), rolloff=0.2, cfo=0.05)
    assert ex.params["rolloff"] == 0.2 and ex.params["cfo"] == 0.05


def test_noise_free_and_clean_copy():
    ex = generate_example("8psk", 4096, np.random.default_rng(2), snr_db=math.inf, keep_clean=True)
    np.testing.assert_allclose(ex.iq, ex.clean, rtol=0, atol=1e-6)


def test_unknown_override_names_the_parameter():
    with pytest.raises(UnknownOverride, match="modulation_index"):
        generate_example("qpsk", 4096, np.random.default_rng(0), modulation_index=0.5)


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"label": "fsk"}, ValueError, "label"),
        ({"n_samples": 100}, ValueError, "n_samples"),
        ({"n_samples": 4096.0}, TypeError, "n_samples"),
        ({"label": "noise", "snr_db": 10.0}, ValueError, "snr_db"),
        ({"snr_db": math.nan}, ValueError, "snr_db"),
    ],
)
def test_bad_requests_name_the_field(kwargs, error, field):
    request = {"label": "qpsk", "n_samples": 4096, **kwargs}
    with pytest.raises(error, match=field):
        generate_example(rng=np.random.default_rng(0), **request)
