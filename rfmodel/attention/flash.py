"""`flash`: the same function and weights as `mha`, computed by
torch.nn.functional.scaled_dot_product_attention (FlashAttention on CUDA, a fused blocked kernel on
CPU), which never materialises the [T, T] score matrix."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from rfmodel.attention.base import key_mask
from rfmodel.attention.mha import MultiHeadAttention
from rfmodel.rope import Rope


class FlashAttention(MultiHeadAttention):
    def attn(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, rope: Rope) -> Tensor:
        q, k = self.rotate(q, k, v, rope)
        # mask None passes no mask at all: with a boolean mask CUDA SDPA skips the flash kernel
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask(mask))  # [B, H, T, d]
