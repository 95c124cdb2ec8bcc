"""Arbitrary bytes and parameters into the decoders and the preprocessing: each call returns a
well-formed result or raises an InputError naming a field, never anything else (the service turns
InputError into a 4xx; any other exception would be a 500)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from preprocessing.errors import InputError
from preprocessing.features import (
    FeatureConfig,
    batch_features,
    compute_features,
    validate_samples,
)
from preprocessing.formats import FORMATS, decode, from_iq_lists, read_sigmf
from preprocessing.recording import batch_recording_features, recording_features
from preprocessing.spectra import n_frames, power_spectra
from preprocessing.stream import StreamFramer

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# anything JSON can carry, nested a little
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
format_names = st.sampled_from(sorted(FORMATS)) | st.text(max_size=6) | json_values
sizes = st.integers(-4, 4096) | st.booleans() | st.floats() | st.text(max_size=4) | st.none()
window_names = st.sampled_from(["hann", "hamming", "kaiser", "boxcar", "tukey"]) | json_values


def expect_result_or_input_error(call):
    """The call's result, or None when it raised an InputError that names a field."""
    try:
        return call()
    except InputError as exc:
        assert exc.field and exc.message
        return None


def complex_tensors(max_len: int = 1024):
    """1-D complex64 tensors whose values may be NaN, infinite or huge."""
    values = st.floats(width=32, allow_nan=True, allow_infinity=True)
    return st.integers(0, max_len).flatmap(
        lambda n: st.tuples(
            st.just(n), st.integers(0, 2**31), st.lists(values, max_size=4), st.booleans()
        ).map(_tensor)
    )


def _tensor(args) -> torch.Tensor:
    n, seed, specials, double = args
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dtype=torch.complex128 if double else torch.complex64, generator=g)
    for k, v in enumerate(specials[:n]):
        x[k] = complex(v, 0.0)
    return x


@FAST
@given(data=st.binary(max_size=2048), fmt=format_names)
def test_decode_any_bytes(data, fmt):
    iq = expect_result_or_input_error(lambda: decode(data, fmt))
    if iq is not None:
        assert iq.dtype == np.complex64 and iq.ndim == 1
        assert iq.size * FORMATS[fmt].sample_bytes == len(data)
        assert np.isfinite(iq).all()


@FAST
@example(i=[0.0], q=[1e39])  # finite as float64, infinite as float32
@given(i=json_values, q=json_values)
def test_iq_lists_any_json(i, q):
    iq = expect_result_or_input_error(lambda: from_iq_lists(i, q))
    if iq is not None:
        assert iq.dtype == np.complex64 and iq.ndim == 1 and np.isfinite(iq).all()


@FAST
@example(fields={"transforms": [["x"]]})  # unhashable names once raised TypeError
@given(
    fields=st.dictionaries(
        st.sampled_from(
            [
                *("nfft", "hop", "window", "transforms", "db", "floor_db"),
                *("recording_segment", "recording_max_segments", "recording_band_limit"),
                "other",
            ]
        ),
        json_values | sizes,
    )
)
def test_feature_config_from_any_mapping(fields):
    cfg = expect_result_or_input_error(lambda: FeatureConfig.from_dict(fields))
    if cfg is not None:
        assert FeatureConfig.from_dict(cfg.to_dict()) == cfg


@FAST
@given(
    x=complex_tensors(),
    nfft=sizes,
    hop=sizes,
    window=window_names,
    db=json_values,
    floor_db=st.floats() | json_values,
    normalize=st.sampled_from([None, "frame_rms"]) | json_values,
)
def test_power_spectra_any_parameters(x, nfft, hop, window, db, floor_db, normalize):
    out = expect_result_or_input_error(
        lambda: power_spectra(x, nfft, hop, window, bool(db), floor_db, normalize)
    )
    if out is not None:
        assert out.shape == (n_frames(x.shape[0], nfft, hop), nfft)


@FAST
@given(
    x=complex_tensors(),
    nfft=st.integers(1, 300),
    max_samples=st.integers(1, 2048),
    transforms=st.sampled_from([("x", "x2", "x4", "x8"), ("x", "env", "amp_q", "if_q")]),
)
def test_features_of_any_samples(x, nfft, max_samples, transforms):
    cfg = FeatureConfig(nfft=nfft, hop=max(1, nfft // 2), transforms=transforms)
    checked = expect_result_or_input_error(lambda: validate_samples(x, cfg, max_samples) or True)
    if checked:
        features = compute_features(x[None], cfg)
        assert features.shape == (1, n_frames(x.shape[0], nfft, cfg.hop), cfg.n_features)
        assert torch.isfinite(features).all()  # valid samples never give NaN features


@settings(FAST, max_examples=80)
@given(recordings=st.lists(complex_tensors(512), max_size=3), nfft=st.integers(1, 128))
def test_batch_features_of_any_recordings(recordings, nfft):
    cfg = FeatureConfig(nfft=nfft, hop=nfft)
    out = expect_result_or_input_error(lambda: batch_features(recordings, cfg))
    if out is not None:
        x, mask = out
        t_max = max(n_frames(r.shape[0], nfft, nfft) for r in recordings)
        assert x.shape == (len(recordings), t_max, cfg.n_features)
        assert mask.shape == (len(recordings), t_max)


@settings(FAST, max_examples=80)
@given(
    recordings=st.lists(complex_tensors(1024), max_size=3),
    nfft=st.integers(1, 128),
    segment=st.integers(0, 2048),
    max_segments=st.integers(1, 4),
    band_limit=st.booleans(),
)
def test_recording_features_of_any_recordings(recordings, nfft, segment, max_segments, band_limit):
    cfg = FeatureConfig(
        nfft=nfft,
        hop=nfft,
        recording_segment=segment,
        recording_max_segments=max_segments,
        recording_band_limit=band_limit,
    )
    out = expect_result_or_input_error(lambda: batch_recording_features(recordings, cfg))
    if out is not None:
        assert out.shape == (len(recordings), cfg.recording_views * cfg.n_features)
    elif segment == 0:
        return  # None: no recording features configured
    for rec in recordings:
        if expect_result_or_input_error(lambda r=rec: validate_samples(r, cfg) or True):
            # valid samples never give NaN features
            assert torch.isfinite(recording_features(rec[None], cfg)).all()


@FAST
@given(nfft=sizes, hop=sizes)
def test_stream_framer_any_sizes(nfft, hop):
    framer = expect_result_or_input_error(lambda: StreamFramer(nfft, hop))
    if framer is not None:
        assert 1 <= framer.hop <= framer.nfft


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(meta=st.binary(max_size=512) | json_values.map(lambda v: str(v).encode()), data=st.binary())
def test_read_sigmf_any_files(tmp_path_factory, meta, data):
    base = Path(tmp_path_factory.mktemp("sigmf")) / "capture"
    base.with_suffix(".sigmf-meta").write_bytes(meta)
    base.with_suffix(".sigmf-data").write_bytes(data)
    recording = expect_result_or_input_error(lambda: read_sigmf(base.with_suffix(".sigmf-meta")))
    if recording is not None:
        assert recording.samples.dtype == np.complex64
