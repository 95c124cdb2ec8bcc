"""The batch cost line (service.batch_cost) against numpy's weighted least squares."""

import numpy as np
import pytest

from service.batch_cost import BatchCost

D = BatchCost.DECAY


def weighted_line(samples, seconds):
    """numpy reference: the weighted least-squares line, weights DECAY^age."""
    weights = BatchCost.DECAY ** np.arange(len(samples))[::-1]
    slope, fixed = np.polyfit(samples, seconds, 1, w=np.sqrt(weights))
    return fixed, slope


def test_a_gpu_like_cost_is_mostly_fixed():
    """4.5 ms a batch plus 0.1 ms a 32k-sample frame, with noise, over batches of 1 to 16."""
    rng = np.random.default_rng(0)
    samples = 32768 * rng.integers(1, 17, 60)
    seconds = 4.5e-3 + 3e-9 * samples + rng.normal(0, 1e-4, 60)
    cost = BatchCost()
    for x, y in zip(samples, seconds, strict=True):
        cost.observe(float(y), int(x))
    fixed, slope = weighted_line(samples, seconds)
    assert cost.fixed_s == pytest.approx(fixed, rel=1e-6)
    assert cost.per_sample_s == pytest.approx(slope, rel=1e-6)
    assert cost.fixed_s == pytest.approx(4.5e-3, abs=2e-4)
    # 16 frames cost little more than one: a per-sample average would say 16x
    assert cost.seconds(16 * 32768) < 2 * cost.seconds(32768)


def test_batches_of_one_size_give_the_per_sample_average_before_any_line():
    cost = BatchCost()
    for y in (1e-3, 1.5e-3):
        cost.observe(y, 1000)
    assert cost.fixed_s == 0
    assert cost.seconds(1000) == pytest.approx((D * 1e-3 + 1.5e-3) / (1 + D))
    assert cost.seconds(0) == 0


def test_no_growth_with_size_gives_the_mean():
    cost = BatchCost()
    cost.observe(5e-3, 1000)
    cost.observe(4e-3, 2000)  # the larger batch was quicker: noise
    assert cost.per_sample_s == 0
    assert cost.fixed_s == pytest.approx((D * 5e-3 + 4e-3) / (1 + D))


def test_a_line_crossing_zero_goes_through_the_origin_instead():
    cost = BatchCost()
    cost.observe(1e-3, 1000)
    cost.observe(4e-3, 2000)  # the line through both is negative at 0 samples
    assert cost.fixed_s == 0
    slope = (D * 1000 * 1e-3 + 2000 * 4e-3) / (D * 1000**2 + 2000**2)
    assert cost.per_sample_s == pytest.approx(slope)


def test_batches_of_one_size_keep_the_last_line_shape_at_their_level():
    """After the warm-up's batches of 1 to 16 frames (6 ms + 0.1 ms a frame), a run of
    one-frame batches at 6.4 ms: once the warm-up's weight has decayed the slope is undetermined,
    and the line keeps the shape last determined (mostly fixed), moved to their level. Through
    the origin, 16 frames would look like 16 x 6.4 ms, and a device whose fixed part passes the
    queue-wait floor would never batch again."""
    frame = 32768
    cost = BatchCost()
    for n in range(1, 17):
        cost.observe(6e-3 + 1e-4 * n, n * frame)
    assert cost.fixed_s == pytest.approx(6e-3)
    assert cost.per_sample_s * frame == pytest.approx(1e-4)
    for _ in range(40):  # the warm-up's weight decays to 0.8^40, about 1e-4
        cost.observe(6.4e-3, frame)
    assert cost.seconds(frame) == pytest.approx(6.4e-3, rel=1e-3)
    assert cost.fixed_s > 0.9 * cost.seconds(frame)
    assert cost.seconds(16 * frame) < 1.5 * cost.seconds(frame)
