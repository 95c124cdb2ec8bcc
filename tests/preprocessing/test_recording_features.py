"""The whole recording's features (preprocessing.recording) against a float64 reference built
from the frame features' own references, plus their invariances and batching."""

import dataclasses

import numpy as np
import pytest
import torch
from test_distribution_features import reference_distributions
from test_feature_frames import random_complex, reference_features

from preprocessing.errors import InvalidParameter, TooFewSamples
from preprocessing.features import DISTRIBUTIONS, FeatureConfig
from preprocessing.recording import batch_recording_features, recording_features

MIXED = FeatureConfig(
    nfft=32,
    hop=16,
    transforms=("x", "x4", "amp_q", "env", "if_q", "x2"),
    sorted_transforms=("x4", "x2"),
    recording_segment=128,
    recording_max_segments=8,
    recording_band_limit=False,  # the plain view; test_band_limited checks the second
)


def reference_recording(x, cfg):
    """numpy float64 from the module docstring: each slot over the recording's whole segments
    (computed as for frames of the segment's length), averaged, brought back to nfft values."""
    segment = min(cfg.recording_segment, x.size // cfg.nfft * cfg.nfft)
    seg_cfg = dataclasses.replace(cfg, nfft=segment, hop=segment, recording_segment=0)
    used = x[: min(x.size // segment, cfg.recording_max_segments) * segment]
    distributions = reference_distributions(used, seg_cfg)
    probabilities = np.linspace(0, 1, cfg.nfft)
    slots = []
    for name in cfg.transforms:
        if name in DISTRIBUTIONS:
            rows = distributions[name]
        else:
            rows = reference_features(used, dataclasses.replace(seg_cfg, transforms=(name,)))
        mean = rows.mean(0)  # [segment]
        if name in DISTRIBUTIONS:
            values = np.quantile(mean, probabilities)
        elif name in cfg.sorted_transforms:
            values = np.quantile(mean, probabilities)[::-1]  # strongest first
        else:
            values = mean.reshape(cfg.nfft, -1).mean(-1)
        slots.append(values * (cfg.nfft / segment) if name == "if_q" else values)
    return np.concatenate(slots)


@pytest.mark.parametrize(
    ("cfg", "n"),
    [
        (MIXED, 1000),  # 7 segments of 128, 104 samples left over
        (MIXED, 100),  # shorter than a segment: one of 96
        (MIXED, 128),
        (dataclasses.replace(MIXED, db=False, window="blackman", recording_segment=64), 300),
        (FeatureConfig(nfft=16, hop=16, recording_segment=256, recording_band_limit=False), 777),
        (dataclasses.replace(MIXED, recording_max_segments=3), 1000),  # the first 3 of 7
    ],
)
def test_matches_float64_reference(cfg, n):
    rng = np.random.default_rng(n)
    x = random_complex(rng, (2, n))
    ours = recording_features(torch.from_numpy(x), cfg)
    assert ours.dtype == torch.float32 and ours.shape == (2, cfg.n_features)
    for b in range(2):
        expected = reference_recording(x[b], cfg)
        np.testing.assert_allclose(ours[b].numpy(), expected, rtol=1e-5, atol=1e-4)


def test_gain_and_phase_invariance():
    rng = np.random.default_rng(3)
    x = random_complex(rng, (2, 900))
    ref = recording_features(torch.from_numpy(x), MIXED)
    for gain in (1e-3, 2e3):
        g = gain * np.exp(1j * rng.uniform(0, 2 * np.pi))
        out = recording_features(torch.from_numpy(x * g), MIXED)
        torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-5)


def test_a_spectral_line_keeps_its_height_whatever_the_recording_length():
    """QPSK's x^4 line, averaged over segments, stands as high over 64k samples as over 4k;
    over the whole recording at once it would stand 12 dB higher."""
    cfg = FeatureConfig(recording_segment=4096)
    rng = np.random.default_rng(4)
    n = 1 << 16
    symbols = np.exp(1j * np.pi / 2 * rng.integers(0, 4, n // 4)).repeat(4)
    tone = np.exp(2j * np.pi * 0.01 * np.arange(n))
    x = symbols * tone + 0.3 * random_complex(rng, n)
    top = cfg.transforms.index("x4") * cfg.nfft
    short, long = (
        recording_features(torch.from_numpy(x[None, :m]), cfg)[0, top].item() for m in (4096, n)
    )
    assert short > 30  # the line: well above the 0 dB noise floor
    assert abs(long - short) < 1.0


def test_only_the_first_segments_are_read():
    rng = np.random.default_rng(6)
    x = torch.from_numpy(random_complex(rng, (2, 1000)))
    capped = dataclasses.replace(MIXED, recording_max_segments=2)
    torch.testing.assert_close(
        recording_features(x, capped), recording_features(x[:, :256], capped), rtol=0, atol=0
    )
    assert not torch.equal(recording_features(x, capped), recording_features(x, MIXED))


def test_batch_of_mixed_lengths_equals_each_alone():
    rng = np.random.default_rng(5)
    recordings = [torch.from_numpy(random_complex(rng, n)) for n in (1000, 40, 1000, 257, 1100)]
    batch = batch_recording_features(recordings, MIXED)
    for b, rec in enumerate(recordings):
        torch.testing.assert_close(batch[b], recording_features(rec[None], MIXED)[0])


def test_none_without_a_segment_and_errors_name_the_field():
    x = torch.randn(1, 1000, dtype=torch.complex64)
    plain = dataclasses.replace(MIXED, recording_segment=0)
    assert recording_features(x, plain) is None
    assert batch_recording_features([x[0]], plain) is None
    with pytest.raises(TooFewSamples):
        recording_features(x[:, :31], MIXED)
    with pytest.raises(TooFewSamples, match="recording 1"):
        batch_recording_features([x[0], x[0, :20]], MIXED)
    with pytest.raises(InvalidParameter, match=r"recordings\[0\]"):
        batch_recording_features([x], MIXED)
    with pytest.raises(InvalidParameter, match="recordings"):
        batch_recording_features([], MIXED)
