"""Where training batches come from: --lengths parsing and a loader that resumes at any step."""

import itertools

import pytest
import torch

from rfmodel.train_stream import LengthMix, LengthMixError, training_loader


def test_length_mix_parses_weights_and_normalises():
    mix = LengthMix.parse("4096:3, 16384:1")
    assert mix.lengths == (4096, 16384)
    assert mix.weights == pytest.approx((0.75, 0.25))
    assert LengthMix.parse(str(mix)) == mix
    assert LengthMix.parse("2048").weights == (1.0,)


@pytest.mark.parametrize("text", ["", "4096:x", "-5", "4096:0", "4096,4096", "4096:nan"])
def test_length_mix_rejects_bad_entries_naming_the_option(text):
    with pytest.raises(LengthMixError, match="lengths"):
        LengthMix.parse(text)


def batches(start_step, workers, rank=0, world_size=1, n=4, **kwargs):
    loader = training_loader(
        seed=3,
        batch_size=6,
        lengths=LengthMix.parse("256:1,512:1"),
        start_step=start_step,
        rank=rank,
        world_size=world_size,
        workers=workers,
        pin_memory=False,
        **kwargs,
    )
    return list(itertools.islice(loader, n))


def same(a, b) -> bool:
    return a[0].shape == b[0].shape and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_loader_gives_complex_batches_of_one_length():
    iq, labels, snr = batches(0, workers=0, n=1)[0]
    assert iq.dtype == torch.complex64 and iq.shape[0] == 6 and iq.shape[1] in (256, 512)
    assert labels.dtype == torch.int64 and snr.shape == (6,)


def test_the_loader_draws_snrs_from_its_range():
    snr = torch.cat([s for _, _, s in batches(0, workers=0, n=8, snr_range=(12.0, 14.0))])
    signal = snr[torch.isfinite(snr)]  # noise has none
    assert signal.numel() > 20 and ((signal >= 12.0) & (signal <= 14.0)).all()
    default = torch.cat([s for _, _, s in batches(0, workers=0, n=8)])
    assert (default[torch.isfinite(default)] < 12.0).any()  # the range above is not the default


def test_resuming_at_a_step_with_workers_continues_the_same_sequence():
    straight = batches(0, workers=0, n=6)
    resumed = batches(2, workers=2, n=4)
    assert all(same(a, b) for a, b in zip(straight[2:], resumed, strict=True))
    assert not same(straight[0], straight[1])


def test_ranks_read_disjoint_sub_streams():
    rank0 = batches(1, workers=0, rank=0, world_size=2, n=2)
    rank1 = batches(1, workers=0, rank=1, world_size=2, n=2)
    single = batches(2, workers=0, n=4)  # the global order: step 2 of rank 0 = global item 2
    assert same(rank0[0], single[0]) and same(rank1[0], single[1])
    assert same(rank0[1], single[2]) and same(rank1[1], single[3])
