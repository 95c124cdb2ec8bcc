"""`latent`: Perceiver/Luna-style attention through M learned latents, O(M*T) time and memory.

Step 1 (pack): M learned latent queries per head attend over the tokens' keys and values (padding
excluded) -> M summaries. Step 2 (unpack): each token's query attends over keys and values projected
from the summaries -> one output per token. No [T, T] matrix is ever formed.

RoPE goes on the token keys of step 1 only. The latents have no position of their own, so a rotated
key makes a latent's score depend on where the token sits: each latent can learn which part of the
recording it reads, and frame order stays visible (without it the layer sees only the set of
frames). Step 2 compares token queries with position-free summaries; rotating the queries there
would add nothing but an absolute-position bias to each token's choice of summary.

On a GPU in bf16/fp16 without autograd both steps run as Triton kernels
(rfmodel.kernels.latent_attention), the same math with the rotation fused into step 1. Step 2's
kernel also takes `wo`, the residual add and the block's next norm when that norm is an RMSNorm
(`residual_norm`; `fuse_residual_norm` switches it off): each head's summary values go through
its slice of `wo` first (32 rows, not every token), so the layer's output, its residual and its
norm never make a round trip to memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rfmodel.attention.base import key_mask, merge_heads, note_kv_state, split_heads
from rfmodel.attention.mha import MultiHeadAttention
from rfmodel.config import ModelConfig
from rfmodel.kernels import HAS_TRITON, fast_path
from rfmodel.norms import RMSNorm
from rfmodel.rope import Rope

if HAS_TRITON:
    from rfmodel.kernels import latent_attention


class LatentAttention(MultiHeadAttention):
    # step 2 with `wo`, the residual add and the next RMSNorm in one kernel: 1.12x the
    # recordings/s of the separate steps at the reference size, compiled, 4k tokens, batch
    # 1,024 on an H100 (docs/experiments/gpu_roofline, session 24); False for the separate ones
    fuse_residual_norm = True

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.n_latents = cfg.n_latents
        # unit-scale like a projected token query; SDPA applies the 1/sqrt(d)
        self.latents = nn.Parameter(torch.randn(self.n_heads, self.n_latents, self.head_dim))
        self.wk_summary = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.wv_summary = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def attn(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, rope: Rope) -> Tensor:
        weights = (self.latents, self.wk_summary.weight, self.wv_summary.weight)
        fused = HAS_TRITON and fast_path(q, k, v, *weights)
        fused = fused and latent_attention.handles(self.latents)
        k_sum, v_sum = self.summaries(k, v, mask, rope, fused)
        if fused:
            return latent_attention.unpack(q, k_sum, v_sum)
        return F.scaled_dot_product_attention(q, k_sum, v_sum)  # [B, H, T, d]

    def summaries(
        self, k: Tensor, v: Tensor, mask: Tensor | None, rope: Rope, fused: bool
    ) -> tuple[Tensor, Tensor]:
        """Step 1 and the summaries' key and value projections -> k_sum, v_sum [B, H, M, d]."""
        if fused:
            note_kv_state(k, v)
            summaries = latent_attention.pack(self.latents, k, v, rope.cos, rope.sin, mask)
        else:
            k = rope.rotate(k)  # [B, H, T, d]
            note_kv_state(k, v)
            latents = self.latents.expand(k.shape[0], -1, -1, -1)  # [B, H, M, d]
            summaries = F.scaled_dot_product_attention(latents, k, v, attn_mask=key_mask(mask))
            summaries = merge_heads(summaries)  # [B, M, D]
        k_sum = split_heads(self.wk_summary(summaries), self.n_heads)  # [B, H, M, d]
        v_sum = split_heads(self.wv_summary(summaries), self.n_heads)  # [B, H, M, d]
        note_kv_state(k_sum, v_sum)
        return k_sum, v_sum

    def fuses_residual_norm(self, x: Tensor, norm: nn.Module) -> bool:
        if not (self.fuse_residual_norm and HAS_TRITON and isinstance(norm, RMSNorm)):
            return False
        on_kernels = fast_path(x, *self.parameters(), norm.weight)
        return on_kernels and latent_attention.handles_wo_norm(self.latents, self.wo.weight)

    def residual_norm(
        self, h: Tensor, x: Tensor, mask: Tensor | None, rope: Rope, norm: nn.Module
    ) -> tuple[Tensor, Tensor]:
        if not self.fuses_residual_norm(x, norm):
            return super().residual_norm(h, x, mask, rope, norm)
        q, k, v = self.project(h)
        k_sum, v_sum = self.summaries(k, v, mask, rope, fused=True)
        return latent_attention.unpack_wo_norm(
            q, k_sum, v_sum, self.wo.weight, x, norm.weight, norm.eps
        )  # [B, T, D] each

    def kv_state_numel(self, batch: int, seq_len: int) -> int:
        # token K/V read in step 1 + summary K/V read in step 2
        return 2 * batch * self.n_heads * (seq_len + self.n_latents) * self.head_dim
