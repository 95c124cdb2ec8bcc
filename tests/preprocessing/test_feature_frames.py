import json

import numpy as np
import pytest
import scipy.signal
import torch

from preprocessing import spectra
from preprocessing.errors import InvalidParameter, InvalidSamples, TooFewSamples, TooManySamples
from preprocessing.features import (
    FeatureConfig,
    batch_features,
    compute_features,
    feature_frames,
    validate_samples,
)
from preprocessing.recording import recording_features
from preprocessing.stream import StreamingFeatures
from rfmodel.config import ModelConfig


def random_complex(rng, shape, dtype=np.complex128):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


# the spectra alone: the distribution features have their own reference test
SPECTRA = ("x", "x2", "x4", "x8")


def reference_features(x, cfg):
    """numpy float64, frame by frame, straight from the definition in features.py."""
    w = scipy.signal.get_window(cfg.window, cfg.nfft)
    w = w / np.sqrt(np.sum(w**2))
    powers = {"x": 1, "x2": 2, "x4": 4, "x8": 8}
    rows = []
    for t in range(feature_frames(x.shape[-1], cfg)):
        frame = x[t * cfg.hop : t * cfg.hop + cfg.nfft]
        y = frame / np.sqrt(np.mean(np.abs(frame) ** 2))
        parts = []
        for name in cfg.transforms:
            z = np.abs(y) ** 2 if name == "env" else y ** powers[name]
            p = np.abs(np.fft.fftshift(np.fft.fft(w * z))) ** 2
            if name in cfg.sorted_transforms:
                p = np.sort(p)[::-1]
            parts.append(10 * np.log10(np.maximum(p, 10 ** (cfg.floor_db / 10))) if cfg.db else p)
        rows.append(np.concatenate(parts))
    return np.stack(rows)


def features_of_random(cfg):
    """Two random recordings of 1,000 samples and their features, of the right dtype and shape."""
    rng = np.random.default_rng(cfg.nfft)
    x = random_complex(rng, (2, 1000))
    ours = compute_features(torch.from_numpy(x), cfg)
    assert ours.dtype == torch.float32
    assert ours.shape == (2, feature_frames(1000, cfg), cfg.n_features)
    return x, ours


def psk_qam(rng, n, order):
    """Unit-power random symbols, one sample per symbol (rectangular pulses are enough here)."""
    if order in ("bpsk", "qpsk"):
        m = 2 if order == "bpsk" else 4
        return np.exp(1j * (np.pi / 4 * (m == 4) + 2 * np.pi * rng.integers(0, m, n) / m))
    side = {"16qam": 4, "64qam": 8}[order]
    levels = 2 * np.arange(side) - (side - 1)
    s = rng.choice(levels, n) + 1j * rng.choice(levels, n)
    return s / np.sqrt(2 * np.mean(levels**2))


def test_config_defaults_and_round_trip():
    cfg = FeatureConfig()
    assert (cfg.nfft, cfg.hop, cfg.window) == (256, 128, "hann")
    assert cfg.transforms == ("x", "x2", "x4", "x8", "env", "amp_q", "if_q")
    assert cfg.sorted_transforms == ("x2", "x4", "x8")
    assert cfg.n_features == 7 * 256 == ModelConfig().n_features
    assert (cfg.recording_segment, cfg.recording_max_segments) == (4096, 4)
    other = FeatureConfig(
        nfft=64, hop=16, window="hamming", transforms=("x", "env"), db=False, recording_segment=512
    )
    for c in (cfg, other):
        assert FeatureConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_numpy_scalars_are_stored_as_ints_and_floats_so_the_config_stays_json():
    cfg = FeatureConfig(
        nfft=np.int64(64),
        hop=np.int32(32),
        recording_segment=np.int64(512),
        floor_db=np.float32(-90),
    )
    assert json.loads(json.dumps(cfg.to_dict()))["nfft"] == 64
    assert cfg == FeatureConfig(nfft=64, hop=32, recording_segment=512, floor_db=-90.0)
    assert all(type(v) is int for v in (cfg.nfft, cfg.hop, cfg.recording_segment))
    assert type(cfg.floor_db) is float


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(InvalidParameter) as err:
        FeatureConfig.from_dict({**FeatureConfig().to_dict(), "nfttt": 3})
    assert err.value.field == "features" and "nfttt" in err.value.message


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"nfft": 0}, "nfft"),
        ({"nfft": 12.5}, "nfft"),
        ({"hop": 512}, "hop"),
        ({"hop": -1}, "hop"),
        ({"window": "nope"}, "window"),
        ({"transforms": ("x", "x3")}, "transforms"),
        ({"transforms": ()}, "transforms"),
        ({"transforms": ("x", "x")}, "transforms"),
        ({"db": "yes"}, "db"),
        ({"floor_db": "low"}, "floor_db"),
        ({"sorted_transforms": ("x3",)}, "sorted_transforms"),
        ({"transforms": ("x", "x4"), "sorted_transforms": "x4"}, "sorted_transforms"),
        ({"recording_segment": -256}, "recording_segment"),
        ({"recording_segment": True}, "recording_segment"),
        ({"recording_segment": 4096.0}, "recording_segment"),
        ({"recording_segment": 1 << 17}, "recording_segment"),  # one FFT past MAX_NFFT
        ({"sorted_transforms": (["x"],)}, "sorted_transforms"),
        ({"recording_max_segments": 0}, "recording_max_segments"),
        ({"recording_max_segments": 2.0}, "recording_max_segments"),
        ({"recording_band_limit": 1}, "recording_band_limit"),
    ],
)
def test_invalid_config_names_the_field(kwargs, field):
    with pytest.raises(InvalidParameter) as err:
        FeatureConfig(**kwargs)
    assert err.value.field == field


def test_unknown_transform_lists_valid_names():
    with pytest.raises(InvalidParameter, match="x2"):
        FeatureConfig(transforms=("x5",))


@pytest.mark.parametrize(
    "cfg",
    [
        FeatureConfig(nfft=64, hop=32, transforms=SPECTRA),
        FeatureConfig(nfft=48, hop=20, window="blackman", transforms=("x4", "env", "x")),
        FeatureConfig(nfft=32, hop=32, transforms=SPECTRA, db=False),
        FeatureConfig(nfft=64, hop=48, transforms=("x", "x4", "x8"), sorted_transforms=("x8",)),
    ],
)
def test_matches_reference(cfg):
    x, ours = features_of_random(cfg)
    for b in range(2):
        ref = reference_features(x[b], cfg)
        np.testing.assert_allclose(ours[b].numpy(), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "cfg, atol32",
    [
        (FeatureConfig(transforms=("x", "x2", "x4", "env")), 0.05),
        (FeatureConfig(nfft=128, hop=64, transforms=("amp_q", "if_q")), 0.01),
    ],
)
def test_gain_and_phase_invariance(cfg, atol32):
    rng = np.random.default_rng(7)
    x = random_complex(rng, (2, 4096))
    ref = compute_features(torch.from_numpy(x), cfg)
    ref32 = compute_features(torch.from_numpy(x.astype(np.complex64)), cfg)
    for gain in (1e-3, 0.05, 3.0, 2e3):
        g = gain * np.exp(1j * rng.uniform(0, 2 * np.pi))
        # float64 input: identical up to the float32 cast of the output
        out = compute_features(torch.from_numpy(x * g), cfg)
        torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-5)
        # complex64 input: float32 round-off, in dB
        out32 = compute_features(torch.from_numpy((x * g).astype(np.complex64)), cfg)
        torch.testing.assert_close(out32, ref32, rtol=0, atol=atol32)


def test_sorted_spectra_do_not_depend_on_the_carrier_offset():
    """A QPSK frame moved by a whole number of bins moves its x^4 line by 4x that, circularly;
    sorted, the x2 and x4 spectra are unchanged while the unsorted ones are not."""
    rng = np.random.default_rng(11)
    nfft = 64
    x = psk_qam(rng, 4 * nfft, "qpsk") + 0.1 * random_complex(rng, 4 * nfft)
    shifted = x * np.exp(2j * np.pi * 5 * np.arange(x.size) / nfft)
    both = torch.from_numpy(np.stack([x, shifted]))
    plain = FeatureConfig(
        nfft=nfft, hop=nfft, window="boxcar", transforms=("x2", "x4"), sorted_transforms=()
    )
    ranked = FeatureConfig(**{**plain.to_dict(), "sorted_transforms": ["x2", "x4"]})
    a, b = compute_features(both, plain)
    assert (a - b).abs().max() > 10  # dB: the lines moved
    a, b = compute_features(both, ranked)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-3)
    assert (a[:, nfft] - a[:, nfft + 1 :].mean(-1)).min() > 10  # the x4 line leads, in dB


def test_silent_frames_sit_at_the_floor():
    x = torch.zeros(1, 1024, dtype=torch.complex64)
    x[0, 512:] = torch.randn(512, dtype=torch.complex64)
    out = compute_features(x, FeatureConfig(nfft=128, hop=128, transforms=SPECTRA))
    assert torch.isfinite(out).all()
    assert (out[0, :4] == -100.0).all() and (out[0, 4:] > -100.0).any()


def test_x2_x4_separate_what_x_cannot():
    """BPSK/QPSK/16QAM/64QAM have the same |FFT(x)|^2 statistics; the x2/x4 spectra differ as the
    features docstring claims: lines at DC and moments E|x|^4, E|x|^8 in their mean level."""
    rng = np.random.default_rng(8)
    cfg = FeatureConfig(db=False, transforms=("x", "x2", "x4"), sorted_transforms=())
    n = 256 * 200
    mean_level = {}
    for order in ("bpsk", "qpsk", "16qam", "64qam"):
        x = psk_qam(rng, n, order) * np.exp(1j * 0.7)
        f = compute_features(torch.from_numpy(x)[None], cfg)[0].double()
        px, px2, px4 = f[:, :256], f[:, 256:512], f[:, 512:]
        assert abs(px.mean().item() - 1.0) < 0.05  # unit power, white: same for all four
        dc_line = {
            k: p[:, 128].mean().item() / p.mean().item() for k, p in (("x2", px2), ("x4", px4))
        }
        if order == "bpsk":
            assert dc_line["x2"] > 50  # x^2 is constant: all power at DC
        else:
            assert dc_line["x2"] < 5
        if order in ("qpsk", "16qam", "64qam"):
            assert dc_line["x4"] > 10  # x^4 has a mean (a line) for square constellations
        mean_level[order] = (px2.mean().item(), px4.mean().item())
    # Parseval with a unit-energy window: mean bin = window-weighted E|y|^4, E|y|^8
    assert mean_level["qpsk"][0] == pytest.approx(1.0, abs=0.01)
    assert mean_level["16qam"][0] == pytest.approx(1.32, abs=0.02)
    assert mean_level["64qam"][0] == pytest.approx(1.381, abs=0.02)
    assert mean_level["16qam"][1] == pytest.approx(3.125, abs=0.1)
    assert mean_level["64qam"][1] - mean_level["16qam"][1] > 0.5


def test_batch_features_groups_pads_and_masks():
    rng = np.random.default_rng(9)
    cfg = FeatureConfig(nfft=64, hop=32)
    lengths = [1000, 64, 1000, 1010, 500, 95]  # 1000 and 1010 give the same frame count
    recordings = [torch.from_numpy(random_complex(rng, n, np.complex64)) for n in lengths]
    x, mask = batch_features(recordings, cfg)
    counts = [feature_frames(n, cfg) for n in lengths]
    assert x.shape == (len(lengths), max(counts), cfg.n_features) and x.dtype == torch.float32
    assert mask.dtype == torch.bool
    for b, (rec, count) in enumerate(zip(recordings, counts, strict=True)):
        assert mask[b].tolist() == [True] * count + [False] * (max(counts) - count)
        torch.testing.assert_close(x[b, :count], compute_features(rec[None], cfg)[0])
        assert (x[b, count:] == 0).all()


def test_batch_features_device_argument():
    recs = [torch.randn(300, dtype=torch.complex64), torch.randn(200, dtype=torch.complex64)]
    x, mask = batch_features(recs, FeatureConfig(nfft=64, hop=64), device="cpu")
    assert x.device.type == mask.device.type == "cpu"


@pytest.mark.parametrize(
    ("recordings", "error", "field"),
    [
        ([], InvalidParameter, "recordings"),
        (
            [torch.randn(300, dtype=torch.complex64), torch.randn(63, dtype=torch.complex64)],
            TooFewSamples,
            "samples",
        ),
        ([torch.randn(2, 300, dtype=torch.complex64)], InvalidParameter, "recordings[0]"),
        ([torch.randn(300)], InvalidParameter, "recordings[0]"),
    ],
)
def test_batch_features_errors(recordings, error, field):
    with pytest.raises(error) as err:
        batch_features(recordings, FeatureConfig(nfft=64, hop=32))
    assert err.value.field == field


@pytest.mark.parametrize("as_tensor", [False, True])
def test_validate_samples(as_tensor):
    cfg = FeatureConfig()

    def make(n, bad=None):
        iq = random_complex(np.random.default_rng(n), n, np.complex64)
        if bad is not None:
            iq[n // 2] = bad
        return torch.from_numpy(iq) if as_tensor else iq

    validate_samples(make(256), cfg, max_samples=256)
    with pytest.raises(TooFewSamples) as err:
        validate_samples(make(255), cfg, max_samples=1000)
    assert err.value.field == "samples" and "nfft=256" in err.value.message
    with pytest.raises(TooManySamples) as err:
        validate_samples(make(1001), cfg, max_samples=1000)
    assert err.value.field == "samples" and "1000" in err.value.message
    for bad in (np.nan, np.inf, complex(0, -np.inf)):
        with pytest.raises(InvalidSamples) as err:
            validate_samples(make(300, bad), cfg, max_samples=1000)
        assert err.value.field == "samples"
    silent = np.zeros(300, np.complex64)
    with pytest.raises(InvalidSamples, match="every sample is zero"):
        validate_samples(torch.from_numpy(silent) if as_tensor else silent, cfg)
    silent[-1] = 1e-30  # one sample above zero is a (very quiet) recording, not nothing
    validate_samples(torch.from_numpy(silent) if as_tensor else silent, cfg)


def test_blockwise_evaluation_equals_one_block(monkeypatch):
    cfg = FeatureConfig(nfft=64, hop=40)
    x = torch.from_numpy(random_complex(np.random.default_rng(13), (3, 3000), np.complex64))
    whole = compute_features(x, cfg)
    monkeypatch.setattr(spectra, "BLOCK_BYTES", 5000)
    torch.testing.assert_close(compute_features(x, cfg), whole, rtol=1e-6, atol=1e-4)


def test_lazy_conjugate_and_negative_views_compute_like_their_values():
    """x.conj() is a view that torch.view_as_real refuses until it is materialised."""
    cfg = FeatureConfig(nfft=64, hop=32, recording_segment=256)
    x = torch.from_numpy(random_complex(np.random.default_rng(11), (1000,))).to(torch.complex64)
    for lazy in (x.conj(), (-x.conj()).conj()):
        values = lazy.clone().resolve_conj().resolve_neg()
        assert torch.equal(compute_features(lazy[None], cfg), compute_features(values[None], cfg))
        assert torch.equal(
            recording_features(lazy[None], cfg), recording_features(values[None], cfg)
        )
        assert torch.equal(StreamingFeatures(cfg).push(lazy), StreamingFeatures(cfg).push(values))
        assert torch.equal(
            spectra.power_spectra(lazy, 64, 16), spectra.power_spectra(values, 64, 16)
        )
