"""The two per-token normalisations a block can use."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rfmodel.config import NORMS


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight over the last dimension (Zhang & Sennrich 2019)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # torch's own kernel: one fused pass on CUDA (a few launches fewer per layer, which is
        # what batch-1 latency on a GPU is made of), faster on the CPU too, and for bf16/fp16
        # it accumulates in float32 and rounds once, where a bf16 mean of squares loses too much.
        # The weight in x's dtype: under autocast (float32 weight, bf16 x) mixed dtypes would
        # take the unfused path
        return F.rms_norm(x, self.weight.shape, self.weight.to(x.dtype), self.eps)


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    if kind == "rmsnorm":
        return RMSNorm(dim, eps)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    raise ValueError(f"unknown norm {kind!r}; valid: {', '.join(NORMS)}")
