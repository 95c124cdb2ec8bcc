"""SyntheticStream (worker- and rank-aware, resumable) and make_eval_set (deterministic)."""

import itertools
import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from rfmodel.data import CLASSES, SnrMix, SyntheticStream, make_eval_set


def take(iterable, n):
    return list(itertools.islice(iterable, n))


def same_batch(a, b):
    return all(
        np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
        for x, y in zip(a, b, strict=True)
    )


def test_stream_examples_are_deterministic_and_seed_dependent():
    a = take(SyntheticStream(seed=1, lengths=(1024,)), 6)
    b = take(SyntheticStream(seed=1, lengths=(1024,)), 6)
    c = take(SyntheticStream(seed=2, lengths=(1024,)), 6)
    for (iq_a, label_a, snr_a), (iq_b, label_b, snr_b) in zip(a, b, strict=True):
        assert iq_a.tobytes() == iq_b.tobytes() and label_a == label_b
        assert snr_a == snr_b or (math.isnan(snr_a) and math.isnan(snr_b))
    assert all(x[0].tobytes() != y[0].tobytes() for x, y in zip(a, c, strict=True))
    for iq, label, snr in a:
        assert iq.dtype == np.complex64 and iq.shape == (1024,)
        assert math.isnan(snr) == (CLASSES[label] == "noise")


def test_stream_draws_classes_snrs_and_lengths_as_asked():
    stream = SyntheticStream(
        seed=3,
        lengths=(512, 1024),
        length_weights=(3, 1),
        snr_range=(0, 10),
        classes=("bpsk", "am"),
    )
    items = take(stream, 80)
    labels = {label for _, label, _ in items}
    assert labels == {0, 1}  # indices into the stream's own class list
    assert all(0 <= snr <= 10 for _, _, snr in items)
    lengths = [len(iq) for iq, _, _ in items]
    assert set(lengths) == {512, 1024} and lengths.count(512) > lengths.count(1024)


def test_batches_are_independent_of_worker_count_and_resume_by_index():
    stream = SyntheticStream(seed=5, lengths=(512, 768), batch_size=4)
    serial = take(stream, 4)
    loader = DataLoader(stream, batch_size=None, num_workers=2)
    parallel = take(loader, 4)
    for a, b in zip(serial, parallel, strict=True):
        assert isinstance(b[0], torch.Tensor) and b[0].dtype == torch.complex64
        assert same_batch(a, (t.numpy() for t in b))
        assert a[0].shape[0] == 4 and a[1].dtype == np.int64 and a[2].dtype == np.float32
    resumed = take(SyntheticStream(seed=5, lengths=(512, 768), batch_size=4, start=2), 2)
    assert all(same_batch(a, b) for a, b in zip(serial[2:], resumed, strict=True))


def test_ranks_split_the_stream_between_them():
    whole = take(SyntheticStream(seed=6, lengths=(256,), batch_size=2), 6)
    rank0 = take(SyntheticStream(seed=6, lengths=(256,), batch_size=2, rank=0, world_size=2), 3)
    rank1 = take(SyntheticStream(seed=6, lengths=(256,), batch_size=2, rank=1, world_size=2), 3)
    assert all(same_batch(a, b) for a, b in zip(whole[0::2], rank0, strict=True))
    assert all(same_batch(a, b) for a, b in zip(whole[1::2], rank1, strict=True))


def test_workers_get_distinct_examples():
    loader = DataLoader(SyntheticStream(seed=7, lengths=(256,)), batch_size=4, num_workers=2)
    first, second = take(loader, 2)  # one batch from each worker
    assert not torch.equal(first[0], second[0])
    rows = [row.numpy().tobytes() for batch in (first, second) for row in batch[0]]
    assert len(set(rows)) == len(rows)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"lengths": ()}, "lengths"),
        ({"lengths": (256, 512), "length_weights": (1,)}, "length_weights"),
        ({"snr_range": (10, 0)}, "snr_range"),
        ({"classes": ("bpsk", "psk")}, "label"),
        ({"batch_size": 0}, "batch_size"),
        ({"rank": 2, "world_size": 2}, "rank"),
    ],
)
def test_stream_rejects_bad_settings(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SyntheticStream(seed=0, **kwargs)


def test_an_snr_mix_draws_each_band_at_its_weight_and_uniformly_within_it():
    mix = SnrMix.parse("-10,-5:1,-5,30:3")
    assert mix.weights == (0.25, 0.75)
    rng = np.random.default_rng(3)
    snr = np.array([mix.draw(rng) for _ in range(20_000)])
    low = snr < -5
    assert ((snr >= -10) & (snr <= 30)).all()
    # binomial share: 0.25 within 4 standard errors (one is 0.003)
    assert abs(low.mean() - 0.25) < 4 * math.sqrt(0.25 * 0.75 / snr.size)
    # uniform within a band: the empirical CDF's largest gap from the line, Kolmogorov-Smirnov's
    # statistic, under 2 / sqrt(n) (its 1 % critical value is 1.63 / sqrt(n))
    for values, (a, b) in ((snr[low], (-10, -5)), (snr[~low], (-5, 30))):
        cdf = np.sort((values - a) / (b - a))
        assert np.abs(cdf - (np.arange(cdf.size) + 0.5) / cdf.size).max() < 2 / math.sqrt(cdf.size)


def test_a_one_band_mix_draws_what_a_plain_range_always_drew():
    mix = SnrMix.parse("-5,30")
    assert str(mix) == "-5,30" and mix.record() == [-5.0, 30.0]
    a, b = np.random.default_rng(4), np.random.default_rng(4)
    assert [mix.draw(a) for _ in range(5)] == [float(b.uniform(-5, 30)) for _ in range(5)]


def test_a_stream_keeps_its_signals_in_the_mix_bands():
    mix = SnrMix.parse("0,1:1,20,21:1")
    examples = take(SyntheticStream(seed=5, lengths=(256,), snr_range=mix), 60)
    snr = np.array([s for _, label, s in examples if CLASSES[label] != "noise"])
    assert (((snr >= 0) & (snr <= 1)) | ((snr >= 20) & (snr <= 21))).all()
    assert (snr < 10).any() and (snr > 10).any()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("0", "pairs"),
        ("30,20", "30,20"),
        ("inf,inf", "finite"),
        ("0,1:0", "positive"),
        ("0,1,x,2", "x,2"),
        ("0,1:w", "0,1:w"),
    ],
)
def test_an_snr_mix_that_does_not_parse_says_why(text, words):
    with pytest.raises(ValueError, match=words):
        SnrMix.parse(text)


def test_eval_set_is_deterministic_balanced_and_extends():
    small = make_eval_set(seed=9, n_per_class=3, n_samples=512, snr_values=(0.0, 10.0))
    again = make_eval_set(seed=9, n_per_class=3, n_samples=512, snr_values=(0.0, 10.0))
    other = make_eval_set(seed=10, n_per_class=3, n_samples=512, snr_values=(0.0, 10.0))
    larger = make_eval_set(seed=9, n_per_class=4, n_samples=512, snr_values=(0.0, 10.0))
    assert small.iq.tobytes() == again.iq.tobytes()
    assert small.iq.tobytes() != other.iq.tobytes()
    assert small.iq.shape == (3 * len(CLASSES), 512) and small.iq.dtype == np.complex64
    np.testing.assert_array_equal(small.labels, np.repeat(np.arange(len(CLASSES)), 3))
    noise = small.labels == CLASSES.index("noise")
    assert np.isnan(small.snr[noise]).all()
    signal_snr = small.snr[~noise].reshape(len(CLASSES) - 1, 3)
    np.testing.assert_array_equal(signal_snr, np.tile([0.0, 10.0, 0.0], (len(CLASSES) - 1, 1)))
    # example j of a class is the same whatever the set size
    np.testing.assert_array_equal(
        larger.iq.reshape(len(CLASSES), 4, 512)[:, :3], small.iq.reshape(len(CLASSES), 3, 512)
    )


def test_eval_set_never_shares_examples_with_the_stream():
    eval_rows = {row.tobytes() for row in make_eval_set(seed=0, n_per_class=2, n_samples=256).iq}
    stream_rows = {iq.tobytes() for iq, _, _ in take(SyntheticStream(seed=0, lengths=(256,)), 60)}
    assert not eval_rows & stream_rows
