"""What every attention backend shares: the mixer interface a block calls, head reshapes, the
grouped SDPA call, and the K/V-state recording the memory tests use."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rfmodel.kernels import HAS_TRITON, fast_path
from rfmodel.rope import Rope

if HAS_TRITON:
    from rfmodel.kernels import flash_attention


class Mixer(nn.Module, ABC):
    """One attention layer: the backend's projections around its core call
    `attn(q, k, v, mask, rope)`, the one place where a backend's attention math lives.

    mask is [B, T] bool, True = real token, or None when every token is real; padded tokens are
    never read as keys, so real-token outputs do not depend on padding."""

    wo: nn.Linear

    def forward(self, x: Tensor, mask: Tensor | None, rope: Rope) -> Tensor:
        q, k, v = self.project(x)
        y = self.attn(q, k, v, mask, rope)  # [B, H, T, dv]
        return self.wo(merge_heads(y))

    def fuses_residual_norm(self, x: Tensor, norm: nn.Module) -> bool:
        """Whether `residual_norm` may take this layer's input x [B, T, D] with `norm` after
        the residual add (a backend with a fused kernel for it says so)."""
        return False

    def residual_norm(
        self, h: Tensor, x: Tensor, mask: Tensor | None, rope: Rope, norm: nn.Module
    ) -> tuple[Tensor, Tensor]:
        """x + self(h, mask, rope) and norm of that, both [B, T, D]: in one pass where
        `fuses_residual_norm` says so, else as written here."""
        x = x + self(h, mask, rope)
        return x, norm(x)

    @abstractmethod
    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, T, D] -> the q, k, v this backend's `attn` takes (not yet rotated)."""

    @abstractmethod
    def attn(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, rope: Rope) -> Tensor:
        """The core math -> [B, H, T, dv]."""

    @abstractmethod
    def kv_state_numel(self, batch: int, seq_len: int) -> int:
        """Elements of K/V (or latent) state `attn` materialises for this batch and length."""

    def kv_state_bytes(self, batch: int, seq_len: int, dtype: torch.dtype) -> int:
        return self.kv_state_numel(batch, seq_len) * dtype.itemsize


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """[B, T, H*d] -> [B, H, T, d] (a view)."""
    b, t, _ = x.shape
    return x.view(b, t, n_heads, -1).transpose(1, 2)


def merge_heads(y: Tensor) -> Tensor:
    """[B, H, T, d] -> [B, T, H*d]."""
    b, h, t, d = y.shape
    return y.transpose(1, 2).reshape(b, t, h * d)


def key_mask(mask: Tensor | None) -> Tensor | None:
    """[B, T] padding mask -> [B, 1, 1, T], broadcast over heads and queries."""
    return None if mask is None else mask[:, None, None, :]


def grouped_sdpa(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float | None = None
) -> Tensor:
    """Softmax attention where each K/V head serves H // Hkv consecutive query heads.

    q [B, H, T, d], k [B, Hkv, S, d], v [B, Hkv, S, dv] -> [B, H, T, dv]. The query heads of a group
    are folded into the query length, so K/V are never repeated per query head. On the GPU fast
    path, small heads at the default scale take rfmodel.kernels.flash_attention instead."""
    if scale is None and HAS_TRITON and fast_path(q, k, v) and flash_attention.handles(q, v):
        return flash_attention.attention(q, k, v, mask)
    b, h, t, d = q.shape
    n_kv = k.shape[1]
    q = q.reshape(b, n_kv, (h // n_kv) * t, d)  # [B, Hkv, G*T, d]
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask(mask), scale=scale)
    return y.reshape(b, h, t, v.shape[-1])


_kv_recorders: list[list[Tensor]] = []


def note_kv_state(*tensors: Tensor) -> None:
    """Hand the tensors a backend materialises as its K/V (or latent) state to any active
    `recording_kv_state()`; the memory tests compare their storage with `kv_state_bytes`."""
    for record in _kv_recorders:
        record.extend(tensors)


@contextmanager
def recording_kv_state() -> Iterator[list[Tensor]]:
    record: list[Tensor] = []
    _kv_recorders.append(record)
    try:
        yield record
    finally:
        _kv_recorders.pop()
