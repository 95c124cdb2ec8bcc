"""`mha`: multi-head attention that materialises the full [T, T] score matrix; the reference the
other backends are checked against."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rfmodel.attention.base import Mixer, key_mask, note_kv_state, split_heads
from rfmodel.config import ModelConfig
from rfmodel.kernels import fast_path
from rfmodel.rope import Rope


class MultiHeadAttention(Mixer):
    """H query heads; K/V heads: H here, fewer in the gqa subclass (same parameter names, so mha,
    flash and gqa with n_kv_heads == n_heads load each other's weights)."""

    def __init__(self, cfg: ModelConfig, n_kv_heads: int | None = None):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.n_kv_heads = n_kv_heads or cfg.n_heads
        self.head_dim = cfg.head_dim
        self.wq = nn.Linear(cfg.d_model, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(cfg.d_model, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(cfg.d_model, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.n_heads * self.head_dim, cfg.d_model, bias=False)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if fast_path(x, self.wq.weight):
            # one matmul reads x once instead of three times (rfmodel.kernels)
            weight = torch.cat((self.wq.weight, self.wk.weight, self.wv.weight))
            widths = (self.wq.out_features, self.wk.out_features, self.wv.out_features)
            q, k, v = F.linear(x, weight).split(widths, dim=-1)
        else:
            q, k, v = self.wq(x), self.wk(x), self.wv(x)
        q = split_heads(q, self.n_heads)  # [B, H, T, d]
        k = split_heads(k, self.n_kv_heads)  # [B, Hkv, T, d]
        v = split_heads(v, self.n_kv_heads)  # [B, Hkv, T, d]
        return q, k, v

    def rotate(self, q: Tensor, k: Tensor, v: Tensor, rope: Rope) -> tuple[Tensor, Tensor]:
        """RoPE on queries and keys; the rotated keys and the values are the K/V state."""
        q, k = rope.rotate(q), rope.rotate(k)
        note_kv_state(k, v)
        return q, k

    def attn(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, rope: Rope) -> Tensor:
        q, k = self.rotate(q, k, v, rope)
        scores = q @ k.transpose(-2, -1) * self.head_dim**-0.5  # [B, H, T, T]
        if mask is not None:
            scores = scores.masked_fill(~key_mask(mask), float("-inf"))
        return scores.softmax(dim=-1) @ v  # [B, H, T, d]

    def kv_state_numel(self, batch: int, seq_len: int) -> int:
        return 2 * batch * self.n_kv_heads * seq_len * self.head_dim
