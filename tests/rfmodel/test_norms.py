"""RMSNorm against its formula; the norm factory."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rfmodel.norms import RMSNorm, make_norm


def test_rmsnorm_matches_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 24, generator=g, dtype=torch.float64) * 5 + 2
    norm = RMSNorm(24, eps=1e-5).double()
    with torch.no_grad():
        norm.weight.copy_(torch.randn(24, generator=g, dtype=torch.float64))
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), expected, rtol=1e-12, atol=1e-12)


def test_rmsnorm_eps_guards_zero_input():
    assert torch.equal(RMSNorm(8)(torch.zeros(2, 8)), torch.zeros(2, 8))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rmsnorm_half_precision_keeps_dtype_and_accuracy(dtype):
    x = torch.randn(4, 64, dtype=torch.float64) * 30
    norm = RMSNorm(64).to(dtype)
    y = norm(x.to(dtype))
    assert y.dtype == dtype
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(y.double(), expected, rtol=2e-2, atol=2e-2)


def test_make_norm():
    assert isinstance(make_norm("rmsnorm", 16, 1e-6), RMSNorm)
    layer = make_norm("layernorm", 16, 1e-6)
    assert isinstance(layer, nn.LayerNorm) and layer.eps == 1e-6
    with pytest.raises(ValueError, match="rmsnorm, layernorm"):
        make_norm("batchnorm", 16, 1e-6)
