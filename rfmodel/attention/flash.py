"""`flash`: the same function and weights as `mha`, computed without materialising the [T, T]
score matrix: by torch.nn.functional.scaled_dot_product_attention (FlashAttention on CUDA, a fused
blocked kernel on CPU), or on the GPU fast path at small head sizes by this project's Triton kernel
(rfmodel.kernels.flash_attention), both through `grouped_sdpa` with one K/V head per query head."""

from __future__ import annotations

from torch import Tensor

from rfmodel.attention.base import grouped_sdpa
from rfmodel.attention.mha import MultiHeadAttention
from rfmodel.rope import Rope


class FlashAttention(MultiHeadAttention):
    def attn(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, rope: Rope) -> Tensor:
        q, k = self.rotate(q, k, v, rope)
        return grouped_sdpa(q, k, v, mask)  # [B, H, T, d]
