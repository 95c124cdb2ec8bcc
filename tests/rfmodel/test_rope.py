"""Rotary embeddings: scores depend only on relative position; rotation is a rotation."""

from __future__ import annotations

import math

import pytest
import torch

from rfmodel.rope import Rope, RopeCache

F64 = torch.float64
CPU = torch.device("cpu")


@pytest.mark.parametrize("dim", [8, 32])
def test_score_depends_only_on_relative_position(dim):
    g = torch.Generator().manual_seed(dim)
    q, k = torch.randn(dim, generator=g, dtype=F64), torch.randn(dim, generator=g, dtype=F64)
    n = 300
    rope = Rope.build(n, dim, 10000.0, CPU, F64)
    rq = rope.rotate(q.expand(n, dim))  # q placed at every position
    rk = rope.rotate(k.expand(n, dim))
    scores = rq @ rk.T  # [n, n]: query at t, key at s
    for t, s in ((0, 0), (3, 10), (10, 3), (150, 40)):
        for shift in (1, 17, 100):
            torch.testing.assert_close(scores[t + shift, s + shift], scores[t, s])
    # and it does depend on the offset
    assert not torch.isclose(scores[0, 5], scores[0, 6])


def test_rotation_preserves_norm_and_is_identity_at_zero():
    x = torch.randn(2, 3, 50, 16, dtype=F64)
    rope = Rope.build(50, 16, 10000.0, CPU, F64)
    y = rope.rotate(x)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(y[..., 0, :], x[..., 0, :])


def test_angles_follow_the_rope_schedule():
    dim, base = 8, 500.0
    rope = Rope.build(40, dim, base, CPU, F64)
    for t in (1, 39):
        for i in range(dim // 2):
            angle = t * base ** (-2 * i / dim)
            assert rope.cos[t, i].item() == pytest.approx(math.cos(angle), abs=1e-12)
            assert rope.sin[t, i].item() == pytest.approx(math.sin(angle), abs=1e-12)


def test_long_positions_stay_accurate_in_float32():
    rope = Rope.build(16384, 32, 10000.0, CPU, torch.float32)
    exact = 16383 * 1.0  # inv_freq of pair 0 is 1
    assert rope.cos[16383, 0].item() == pytest.approx(math.cos(exact), abs=1e-6)


def test_cache_slices_equal_fresh_tables():
    cache = RopeCache(16, 10000.0)
    for seq_len, dtype in ((40, F64), (10, F64), (300, F64), (25, torch.float32)):
        got = cache(seq_len, CPU, dtype)
        fresh = Rope.build(seq_len, 16, 10000.0, CPU, dtype)
        assert got.cos.dtype == dtype
        assert torch.equal(got.cos, fresh.cos) and torch.equal(got.sin, fresh.sin)
