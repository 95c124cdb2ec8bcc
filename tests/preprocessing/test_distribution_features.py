"""The per-frame distribution features ("amp_q", "if_q") of preprocessing.features."""

import numpy as np
import pytest
import torch
from test_feature_frames import features_of_random, random_complex

from preprocessing import spectra
from preprocessing.errors import InvalidParameter
from preprocessing.features import FeatureConfig, compute_features, feature_frames


def wiener_reference(y, quantile=0.1):
    """The unit frame y with its white noise floor filtered out, unit RMS again: numpy float64,
    from wiener_cleaned's docstring."""
    spectrum = np.fft.fft(y)
    power = np.abs(spectrum) ** 2
    k = max(1, int(quantile * y.size))
    floor = np.sort(power)[k - 1] / -np.log(1 - k / y.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(power > np.log(y.size) * floor, 1 - floor / power, 0.0)
    clean = np.fft.ifft(spectrum * gain)
    rms = np.sqrt(np.mean(np.abs(clean) ** 2))
    return clean / rms if rms > 0 else clean


def reference_distributions(x, cfg, clean=True):
    """numpy float64, frame by frame, from the definitions in the features docstring:
    {name: [T, nfft]} for both distribution features (clean=False: without the noise filter)."""
    out = {"amp_q": [], "if_q": []}
    for t in range(feature_frames(x.shape[-1], cfg)):
        frame = x[t * cfg.hop : t * cfg.hop + cfg.nfft]
        y = frame / np.sqrt(np.mean(np.abs(frame) ** 2))
        if clean:
            y = wiener_reference(y)
        power = np.sort(np.abs(y) ** 2)
        floor = 10 ** (cfg.floor_db / 10)
        out["amp_q"].append(10 * np.log10(np.maximum(power, floor)) if cfg.db else power)
        z = y[1:] * np.conj(y[:-1])
        # subtract the angle of the mean phasor, then wrap into [-pi, pi)
        freq = np.angle(z) - np.angle(z.sum())
        freq = (freq + np.pi) % (2 * np.pi) - np.pi
        bins = freq * cfg.nfft / (2 * np.pi)
        out["if_q"].append(np.quantile(bins, np.linspace(0, 1, cfg.nfft)))
    return {name: np.stack(rows) for name, rows in out.items()}


def slot(features, cfg, name):
    k = cfg.transforms.index(name)
    return features[..., k * cfg.nfft : (k + 1) * cfg.nfft]


def fsk2(rng, n, deviation, sps):
    """Continuous-phase 2FSK, rectangular frequency pulses: every sample-to-sample phase step is
    exactly +-2 pi deviation. Returns the signal and its per-step frequencies (cycles/sample)."""
    bits = rng.integers(0, 2, n // sps + 1).repeat(sps)[: n - 1]
    steps = deviation * (2.0 * bits - 1.0)
    phase = 2 * np.pi * np.concatenate([[0.0], np.cumsum(steps)]) + rng.uniform(0, 2 * np.pi)
    return np.exp(1j * phase), steps


@pytest.mark.parametrize(
    "cfg",
    [
        FeatureConfig(nfft=64, hop=32, transforms=("x", "amp_q", "if_q", "x4")),
        FeatureConfig(nfft=48, hop=20, window="blackman", transforms=("if_q", "env", "amp_q")),
        FeatureConfig(nfft=32, hop=32, db=False, transforms=("amp_q", "if_q")),
        FeatureConfig(nfft=3, hop=1, transforms=("amp_q", "if_q")),
    ],
)
def test_matches_reference(cfg):
    x, ours = features_of_random(cfg)
    for b in range(2):
        ref = reference_distributions(x[b], cfg)
        for name in ("amp_q", "if_q"):
            if name in cfg.transforms:
                got = slot(ours[b], cfg, name).numpy()
                np.testing.assert_allclose(got, ref[name], rtol=1e-5, atol=1e-4, err_msg=name)
                assert (np.diff(got, axis=-1) >= 0).all()  # quantiles: ascending
    # the spectra keep their slots and values next to the distribution features
    spectral = tuple(n for n in cfg.transforms if n not in ("amp_q", "if_q"))
    if spectral:
        alone = compute_features(
            torch.from_numpy(x), FeatureConfig(**{**cfg.to_dict(), "transforms": spectral})
        )
        for k, name in enumerate(spectral):
            torch.testing.assert_close(
                slot(ours, cfg, name), alone[..., k * cfg.nfft : (k + 1) * cfg.nfft]
            )


def test_whole_bin_carrier_offset_invariance():
    # gain and phase: test_feature_frames.py::test_gain_and_phase_invariance
    rng = np.random.default_rng(7)
    cfg = FeatureConfig(nfft=128, hop=64, transforms=("amp_q", "if_q"))
    x = random_complex(rng, (2, 4096))
    n = np.arange(x.shape[-1])
    ref = compute_features(torch.from_numpy(x), cfg)
    for offset in (1, -17, 40):  # whole bins: the periodogram, so the filter, only turns round
        moved = x * np.exp(2j * np.pi * offset * n / cfg.nfft)
        out = compute_features(torch.from_numpy(moved), cfg)
        # amp_q does not see the offset; if_q turns every phase step and their mean alike
        torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-5)


def test_two_tone_fsk_gives_two_plateaus_whatever_the_offset():
    """2FSK at +-d cycles/sample: if_q sits on two levels 2 d nfft bins apart, split where the
    share of steps at the low tone says, at any carrier offset and with some noise; amp_q stays
    near 0 dB. Not exactly flat: the noise filter drops the far sidelobes of the rectangular
    frequency pulses, so the frequency rings a little after each change."""
    nfft, deviation = 256, 0.03
    cfg = FeatureConfig(nfft=nfft, hop=nfft, transforms=("amp_q", "if_q"))
    rng = np.random.default_rng(3)
    x, steps = fsk2(rng, 16 * nfft, deviation, sps=16)
    n = np.arange(x.size)
    noise = 0.1 * random_complex(rng, x.size) / np.sqrt(2)  # 20 dB SNR over the whole band
    # case: (signal, tolerance of the gap, of the flatness), in bins
    cases = {
        "clean": (x, 0.3, 2.0),
        "offset 0.087": (x * np.exp(2j * np.pi * 0.087 * n), 0.3, 4.0),
        "offset -0.21, noise": (x * np.exp(-2j * np.pi * 0.21 * n) + noise, 1.0, 5.0),
    }
    for case, (signal, gap_tolerance, flat_tolerance) in cases.items():
        features = compute_features(torch.from_numpy(signal)[None], cfg)[0].double().numpy()
        amp_q, if_q = slot(features, cfg, "amp_q"), slot(features, cfg, "if_q")
        assert np.abs(amp_q[:, nfft // 10 : -nfft // 10]).max() < 1.0, case  # dB
        for t, q in enumerate(if_q):
            low = int((steps[t * nfft : (t + 1) * nfft - 1] < 0).sum())  # of nfft - 1 steps
            assert 10 < low < nfft - 10, "both tones in every frame"
            lower, upper = q[: low - 3], q[low + 3 :]
            gap = np.median(upper) - np.median(lower)
            assert gap == pytest.approx(2 * deviation * nfft, abs=gap_tolerance), case
            for plateau in (lower, upper):  # flat in the middle 60 %
                trim = len(plateau) // 5
                assert np.ptp(plateau[trim : len(plateau) - trim]) < flat_tolerance, case
            # centred on the mean frequency: the two levels straddle zero
            assert np.median(lower) < 0 < np.median(upper), case


def test_noise_filter_recovers_a_narrow_signal():
    """A constant-modulus signal a sixteenth of the band wide at 15 dB in-band SNR is at 3 dB
    per sample: the filter brings amp_q from nearly noise-like to nearly what 15 dB gives."""
    nfft = 256
    cfg = FeatureConfig(nfft=nfft, hop=nfft, transforms=("amp_q", "if_q"))
    rng = np.random.default_rng(6)
    n = 16 * nfft
    # smooth frequency (a smoothed random walk), so the signal stays within its band
    message = np.convolve(rng.standard_normal(n + 63), np.hanning(64), "valid")
    freq = 0.02 * message / np.abs(message).max()
    x = np.exp(2j * np.pi * np.cumsum(freq))
    x += np.sqrt(10 ** (-15 / 10) * 16 / 2) * random_complex(rng, n)

    def spread(q):  # dB between the 10 % and 90 % quantiles, median over frames
        return np.median(q[:, int(0.9 * nfft)] - q[:, int(0.1 * nfft)])

    ours = slot(compute_features(torch.from_numpy(x)[None], cfg)[0].double().numpy(), cfg, "amp_q")
    raw = spread(reference_distributions(x, cfg, clean=False)["amp_q"])
    # |signal + noise|^2 spreads by 2.8 dB at 15 dB SNR, 10.1 dB at 3 dB; noise alone: 13.4 dB
    assert raw > 8.0
    assert spread(ours) < 4.5


def test_silent_frames_are_finite_and_do_not_depend_on_signed_zeros():
    cfg = FeatureConfig(nfft=64, hop=64, transforms=("amp_q", "if_q"))
    x = torch.zeros(2, 256, dtype=torch.complex64)
    x[1] = torch.complex(torch.tensor(-0.0), torch.tensor(-0.0))  # all -0 - 0j
    x[:, 128:] = torch.randn(128, dtype=torch.complex64)
    out = compute_features(x, cfg)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], out[1])
    assert (out[:, :2, :64] == cfg.floor_db).all()  # amp_q at the floor
    assert (out[:, :2, 64:] == 0).all()  # if_q: no phase steps, all at the centre


def test_nfft_one_gives_a_centred_if():
    cfg = FeatureConfig(nfft=1, hop=1, transforms=("amp_q", "if_q"))
    x = torch.from_numpy(random_complex(np.random.default_rng(5), (1, 10)))
    out = compute_features(x, cfg)
    assert out.shape == (1, 10, 2)
    assert (out[..., 0].abs() < 1e-5).all() and (out[..., 1] == 0).all()


def test_config_accepts_the_names_and_keeps_the_layout():
    cfg = FeatureConfig(transforms=("x", "x2", "x4", "x8", "env", "amp_q", "if_q"))
    assert cfg.n_features == 7 * 256
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg


def test_unknown_names_list_every_valid_one():
    with pytest.raises(InvalidParameter) as err:
        FeatureConfig(transforms=("x", "phase_q"))
    assert err.value.field == "transforms"
    for name in ("x2", "env", "amp_q", "if_q"):
        assert name in err.value.message


def test_distribution_features_are_not_spectra_to_sort():
    with pytest.raises(InvalidParameter) as err:
        FeatureConfig(transforms=("x", "amp_q"), sorted_transforms=("amp_q",))
    assert err.value.field == "sorted_transforms" and "sorted by definition" in err.value.message


def test_blockwise_evaluation_equals_one_block(monkeypatch):
    cfg = FeatureConfig(nfft=64, hop=40, transforms=("x4", "if_q", "amp_q"))
    x = torch.from_numpy(random_complex(np.random.default_rng(13), (3, 3000), np.complex64))
    whole = compute_features(x, cfg)
    monkeypatch.setattr(spectra, "BLOCK_BYTES", 5000)
    torch.testing.assert_close(compute_features(x, cfg), whole, rtol=1e-6, atol=1e-4)
