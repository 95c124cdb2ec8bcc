"""`gqa`: grouped-query attention (Ainslie et al. 2023). n_kv_heads < n_heads K/V heads, each read
by a group of n_heads // n_kv_heads query heads: the K/V state shrinks by that factor."""

from __future__ import annotations

from torch import Tensor

from rfmodel.attention.base import grouped_sdpa
from rfmodel.attention.mha import MultiHeadAttention
from rfmodel.config import ModelConfig
from rfmodel.rope import Rope


class GroupedQueryAttention(MultiHeadAttention):
    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, n_kv_heads=cfg.n_kv_heads)

    def attn(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, rope: Rope) -> Tensor:
        q, k = self.rotate(q, k, v, rope)
        return grouped_sdpa(q, k, v, mask)  # [B, H, T, d]
