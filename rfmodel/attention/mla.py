"""`mla`: multi-head latent attention (DeepSeek-V2/V3).

Each token keeps one low-rank joint KV latent c_kv (kv_lora_rank wide, RMS-normalised) and one
decoupled RoPE key k_pe (qk_rope_head_dim wide, shared by all heads). Per head h:
    key_h   = [W_uk_h c_kv, k_pe]          value_h = W_uv_h c_kv
    query_h = [q_nope_h, rope(q_pe_h)]     (queries optionally through a q_lora_rank bottleneck)
Position lives only in the decoupled part: the no-position part must stay rotation-free so that
W_uk can be absorbed.

Two forms of the same function (cfg.mla_absorb):
- naive: materialise per-head K [B, H, T, nope + rope] and V [B, H, T, v] and attend (the
  reference form; SDPA's fused CPU kernel needs equal K and V widths, so on CPU the scores are
  materialised too);
- absorbed: fold W_uk into the query (q_nope_h W_uk_h lives in latent space) and W_uv into the
  output, so attention runs over [c_kv, k_pe] directly: one [B, T, rank + rope] tensor shared by all
  heads, i.e. multi-query attention in the latent space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rfmodel.attention.base import Mixer, grouped_sdpa, key_mask, note_kv_state, split_heads
from rfmodel.config import ModelConfig
from rfmodel.norms import RMSNorm
from rfmodel.rope import Rope


class MultiHeadLatentAttention(Mixer):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.kv_rank = cfg.kv_lora_rank
        self.nope_dim = cfg.qk_nope_head_dim
        self.rope_dim = cfg.qk_rope_head_dim
        self.v_dim = cfg.v_head_dim
        self.absorb = cfg.mla_absorb
        self.scale = (self.nope_dim + self.rope_dim) ** -0.5
        q_width = self.n_heads * (self.nope_dim + self.rope_dim)
        if cfg.q_lora_rank is None:
            self.wq = nn.Linear(cfg.d_model, q_width, bias=False)
        else:
            self.wq = nn.Sequential(
                nn.Linear(cfg.d_model, cfg.q_lora_rank, bias=False),
                RMSNorm(cfg.q_lora_rank, cfg.norm_eps),
                nn.Linear(cfg.q_lora_rank, q_width, bias=False),
            )
        self.wkv_a = nn.Linear(cfg.d_model, self.kv_rank + self.rope_dim, bias=False)
        self.kv_norm = RMSNorm(self.kv_rank, cfg.norm_eps)
        # rows per head: nope_dim rows of W_uk, then v_dim rows of W_uv
        self.wkv_b = nn.Linear(
            self.kv_rank, self.n_heads * (self.nope_dim + self.v_dim), bias=False
        )
        self.wo = nn.Linear(self.n_heads * self.v_dim, cfg.d_model, bias=False)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """K and V come from one compressed tensor: k and v are both [B, T, rank + rope]."""
        q = split_heads(self.wq(x), self.n_heads)  # [B, H, T, nope + rope]
        kv = self.wkv_a(x)  # [B, T, rank + rope]: un-normalised c_kv, un-rotated k_pe
        return q, kv, kv

    def attn(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, rope: Rope) -> Tensor:
        # k is v: the compressed tensor both keys and values are built from
        c_kv, k_pe = k.split([self.kv_rank, self.rope_dim], dim=-1)
        c_kv = self.kv_norm(c_kv)  # [B, T, rank]
        k_pe = rope.rotate(k_pe)  # [B, T, rope]
        q_nope, q_pe = q.split([self.nope_dim, self.rope_dim], dim=-1)
        q_pe = rope.rotate(q_pe)  # [B, H, T, rope]
        w_b = self.wkv_b.weight.view(self.n_heads, self.nope_dim + self.v_dim, self.kv_rank)
        w_uk, w_uv = w_b.split([self.nope_dim, self.v_dim], dim=1)  # [H, nope, rank], [H, v, rank]
        if not self.absorb:
            keys = torch.cat(
                (
                    torch.einsum("btc,hdc->bhtd", c_kv, w_uk),  # [B, H, T, nope]
                    k_pe[:, None].expand(-1, self.n_heads, -1, -1),  # [B, H, T, rope]
                ),
                dim=-1,
            )
            values = torch.einsum("btc,hdc->bhtd", c_kv, w_uv)  # [B, H, T, v]
            note_kv_state(keys, values)
            query = torch.cat((q_nope, q_pe), dim=-1)  # [B, H, T, nope + rope]
            return F.scaled_dot_product_attention(
                query, keys, values, attn_mask=key_mask(mask), scale=self.scale
            )
        latent = torch.cat((c_kv, k_pe), dim=-1)[:, None]  # [B, 1, T, rank + rope]
        note_kv_state(latent)
        q_latent = torch.einsum("bhtd,hdc->bhtc", q_nope, w_uk)  # [B, H, T, rank]
        query = torch.cat((q_latent, q_pe), dim=-1)  # [B, H, T, rank + rope]
        # values = the whole latent, the k_pe columns of the output dropped: q, k and v then share
        # one head width, which SDPA's flash kernels need, at no extra copy
        out = grouped_sdpa(query, latent, latent, mask, scale=self.scale)[..., : self.kv_rank]
        return torch.einsum("bhtc,hdc->bhtd", out, w_uv)  # [B, H, T, v]

    def kv_state_numel(self, batch: int, seq_len: int) -> int:
        if self.absorb:
            return batch * seq_len * (self.kv_rank + self.rope_dim)
        return batch * self.n_heads * seq_len * (self.nope_dim + self.rope_dim + self.v_dim)
