import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from preprocessing.errors import InvalidParameter, TooFewSamples
from preprocessing.features import FeatureConfig, compute_features
from preprocessing.recording import recording_features
from preprocessing.spectra import frames_of, n_frames
from preprocessing.stream import StreamFramer, StreamingFeatures


def random_stream(seed, n, dtype=torch.complex64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dtype=dtype, generator=g)


def split(x, cuts):
    """Chunks of x between sorted cut points (repeats give empty chunks)."""
    edges = [0, *sorted(cuts), x.shape[0]]
    return [x[a:b] for a, b in itertools.pairwise(edges)]


@st.composite
def framed_streams(draw):
    nfft = draw(st.integers(1, 64))
    hop = draw(st.integers(1, nfft))
    n = draw(st.integers(0, 600))
    cuts = draw(st.lists(st.integers(0, n), max_size=12))
    return nfft, hop, n, cuts, draw(st.integers(0, 2**31))


@settings(max_examples=150, deadline=None)
@given(framed_streams())
def test_chunked_frames_equal_one_shot(case):
    nfft, hop, n, cuts, seed = case
    x = random_stream(seed, n)
    framer = StreamFramer(nfft, hop)
    pieces = []
    for chunk in split(x, cuts):
        frames = framer.push(chunk)
        assert frames.shape[1:] == (nfft,)
        assert framer.buffered < nfft
        pieces.append(frames)
    got = torch.cat(pieces)
    expected = frames_of(x, nfft, hop) if n >= nfft else torch.empty(0, nfft)
    assert got.shape[0] == n_frames(n, nfft, hop) == framer.frames_emitted
    assert torch.equal(got, expected)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 3000), max_size=8), st.integers(0, 2**31))
def test_streaming_features_equal_one_shot(cuts, seed):
    """In complex128: in complex64 the FFT of another batch of frames rounds differently, by a
    few thousandths of a dB in bins 60 dB below the frame (preprocessing.stream)."""
    cfg = FeatureConfig(nfft=128, hop=48)
    x = random_stream(seed, 3000, torch.complex128)
    stream = StreamingFeatures(cfg)
    got = torch.cat([stream.push(chunk) for chunk in split(x, cuts)])
    # the rows are float32: a float64 difference may still turn the last float32 bit
    torch.testing.assert_close(got, compute_features(x[None], cfg)[0], rtol=1e-6, atol=1e-5)


def test_empty_and_short_chunks():
    framer = StreamFramer(16, 8)
    assert framer.push(torch.empty(0, dtype=torch.complex64)).shape == (0, 16)
    assert framer.push(random_stream(1, 15)).shape == (0, 16)
    assert framer.buffered == 15
    assert framer.push(random_stream(2, 1)).shape == (1, 16)
    assert framer.buffered == 8  # the second frame starts at sample 8


def test_tail_does_not_keep_the_chunk_alive():
    framer = StreamFramer(64, 32)
    framer.push(random_stream(3, 100_000))
    assert framer.buffered < 64
    assert framer._tail.untyped_storage().nbytes() < 64 * 8


def test_frames_survive_the_caller_reusing_its_receive_buffer():
    """An SDR loop fills one buffer again and again; frames already handed out keep their
    samples, on the first push as on later ones."""
    framer = StreamFramer(16, 8)
    buffer = random_stream(4, 40)
    first = framer.push(buffer)
    expected = first.clone()
    buffer.copy_(random_stream(5, 40))
    second = framer.push(buffer)
    expected_second = second.clone()
    buffer.zero_()
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    torch.testing.assert_close(second, expected_second, rtol=0, atol=0)


@pytest.mark.parametrize(
    "chunk",
    [
        torch.randn(10),
        torch.randn(2, 10, dtype=torch.complex64),
        torch.randn(10, dtype=torch.complex128),  # the stream started as complex64
    ],
)
def test_bad_chunks(chunk):
    framer = StreamFramer(8, 4)
    framer.push(torch.randn(3, dtype=torch.complex64))
    with pytest.raises(InvalidParameter) as err:
        framer.push(chunk)
    assert err.value.field == "chunk"


def test_framer_validates_sizes():
    with pytest.raises(InvalidParameter) as err:
        StreamFramer(8, 9)
    assert err.value.field == "hop"


@settings(max_examples=60, deadline=None)
@given(
    st.integers(64, 2000),
    st.lists(st.integers(0, 2000), max_size=8),
    st.integers(0, 2**31),
    st.sampled_from([(256, 256), (40, 64), (100, 64), (300, 256)]),
)
def test_streaming_recording_features_equal_one_shot(n, cuts, seed, segment):
    """Shorter and longer than the samples the recording's features read (3 segments of
    recording_segment cut to whole frames, or of one frame where it is shorter)."""
    recording_segment, read = segment
    cfg = FeatureConfig(
        nfft=64, hop=32, recording_segment=recording_segment, recording_max_segments=3
    )
    x = random_stream(seed, n)
    stream = StreamingFeatures(cfg)
    for chunk in split(x, [c for c in cuts if c <= n]):
        stream.push(chunk)
    assert torch.equal(stream.recording(), recording_features(x[None], cfg)[0])
    assert sum(piece.shape[0] for piece in stream._head) == min(n, 3 * read)


def test_streaming_recording_features_need_one_frame_and_a_config_that_has_them():
    stream = StreamingFeatures(FeatureConfig(nfft=64, hop=32, recording_segment=256))
    stream.push(random_stream(6, 63))
    with pytest.raises(TooFewSamples):
        stream.recording()
    assert (
        StreamingFeatures(FeatureConfig(nfft=64, hop=32, recording_segment=0)).recording() is None
    )
