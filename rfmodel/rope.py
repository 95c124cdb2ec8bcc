"""Rotary position embeddings (Su et al. 2021): rotating a query at position t and a key at position
s by angles proportional to t and s makes their dot product depend only on t - s.

Half-split pairing (GPT-NeoX style): dimension i is rotated together with dimension i + dim/2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Rope:
    cos: Tensor  # [T, dim/2]
    sin: Tensor  # [T, dim/2]

    @classmethod
    def build(
        cls, seq_len: int, dim: int, base: float, device: torch.device, dtype: torch.dtype
    ) -> Rope:
        # angles in float64: at position 16k a float32 angle is already ~1e-3 rad off
        inv_freq = base ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float64) / dim)
        angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float64), inv_freq)
        return cls(cos=angles.cos().to(dtype), sin=angles.sin().to(dtype))

    def rotate(self, x: Tensor) -> Tensor:
        """x [..., T, dim] -> the same shape, position t rotated by angle t * inv_freq."""
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * self.cos - x2 * self.sin, x1 * self.sin + x2 * self.cos), dim=-1)


class RopeCache:
    """Tables for the longest sequence seen so far, sliced for shorter ones; rebuilt only for a
    longer sequence or another device or dtype. Building them costs more than a layer's attention
    at a few hundred tokens."""

    def __init__(self, dim: int, base: float):
        self.dim = dim
        self.base = base
        self._rope: Rope | None = None

    def __call__(self, seq_len: int, device: torch.device, dtype: torch.dtype) -> Rope:
        rope = self._rope
        if (
            rope is None
            or rope.cos.shape[0] < seq_len
            or rope.cos.device != device
            or rope.cos.dtype != dtype
        ):
            rope = self._rope = Rope.build(seq_len, self.dim, self.base, device, dtype)
        return Rope(cos=rope.cos[:seq_len], sin=rope.sin[:seq_len])
