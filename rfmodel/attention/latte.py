"""`latte`: Latte, bidirectional form (Dolga et al. 2024, "Latte: Latent Attention for Linear Time
Transformers"), O(T*L) time and memory.

Attention weights are modelled through L latent states: p(s|t) = sum_l p(l|t) p(s|l), with
p(l|t) = softmax_l(q_t . w_l) (which latents token t listens to) and p(s|l) = softmax_s(k_s . u_l)
over the real tokens (what latent l reads), so
    y_t = sum_l p(l|t) sum_s p(s|l) v_s.
The inner sums are L latent states computed once; no [T, T] matrix is formed. u_l and w_l are
learned per head; there is no 1/sqrt(d) because they absorb any scale.

Latte-Macchiato (latte_window > 0): one more state, "local", joins the softmax over latents; its
p(s|local, t) is ordinary softmax attention of q_t over the real tokens with |t - s| <= window. The
token weights p(local|t) p(s|local, t) + sum_l p(l|t) p(s|l) remain a probability distribution.

RoPE: on the keys of p(s|l), for the reason given in latent.py (the latents have no position, so a
rotated key lets each latent choose where it reads); in the local window on queries and keys, as in
mha, where it encodes the relative offset t - s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rfmodel.attention.base import key_mask, note_kv_state
from rfmodel.attention.mha import MultiHeadAttention
from rfmodel.config import ModelConfig
from rfmodel.rope import Rope


class LatteAttention(MultiHeadAttention):
    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.n_latents = cfg.n_latents
        self.window = cfg.latte_window
        n_states = self.n_latents + (1 if self.window else 0)  # with a window: + the local state
        # std 1/sqrt(d): the logits start at the scale of scaled dot-product attention
        std = self.head_dim**-0.5
        # u_l, what latent l reads: [H, L, d]
        self.latent_queries = nn.Parameter(
            torch.randn(self.n_heads, self.n_latents, self.head_dim) * std
        )
        # w_l, which latents a token listens to: [H, L(+1), d]
        self.latent_keys = nn.Parameter(torch.randn(self.n_heads, n_states, self.head_dim) * std)

    def attn(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, rope: Rope) -> Tensor:
        k = rope.rotate(k)  # [B, H, T, d]
        read = torch.einsum("hld,bhsd->bhls", self.latent_queries, k)  # [B, H, L, T]
        if mask is not None:
            read = read.masked_fill(~key_mask(mask), float("-inf"))
        states = read.softmax(dim=-1) @ v  # [B, H, L, dv]: sum_s p(s|l) v_s
        note_kv_state(k, v, states)
        listen = torch.einsum("bhtd,hld->bhtl", q, self.latent_keys).softmax(dim=-1)
        # listen [B, H, T, L(+1)]: p(l|t)
        y = listen[..., : self.n_latents] @ states  # [B, H, T, dv]
        if self.window:
            local = sliding_window_attention(rope.rotate(q), k, v, mask, self.window)
            y = y + listen[..., self.n_latents :] * local
        return y

    def kv_state_numel(self, batch: int, seq_len: int) -> int:
        # token K/V read by the latents + the L latent states the tokens read (+ with a window,
        # the zero-padded copies of K and V its windows are views of)
        padded = 2 * (seq_len + 2 * self.window) if self.window else 0
        return batch * self.n_heads * (2 * seq_len + self.n_latents + padded) * self.head_dim


def sliding_window_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, window: int
) -> Tensor:
    """Softmax attention of each token t over the real tokens s with |t - s| <= window.

    q, k [B, H, T, d], v [B, H, T, dv] -> [B, H, T, dv]; memory O(T * window)."""
    b, _, t, d = q.shape
    span = 2 * window + 1
    # entry j of token t's window is token t - window + j; zero-pad the ends so every window is full
    k_padded, v_padded = (F.pad(x, (0, 0, window, window)) for x in (k, v))  # [B,H,T+2w,d]
    note_kv_state(k_padded, v_padded)
    k_win = k_padded.unfold(2, span, 1)  # [B,H,T,d,W]
    v_win = v_padded.unfold(2, span, 1)  # [B,H,T,dv,W]
    scores = torch.einsum("bhtd,bhtdw->bhtw", q, k_win) * d**-0.5  # [B, H, T, W]
    real = q.new_zeros(b, t + 2 * window, dtype=torch.bool)
    real[:, window : window + t] = True if mask is None else mask
    visible = real.unfold(1, span, 1)  # [B, T, W]
    # a padded token whose window holds only padding still sees itself: no NaN anywhere
    visible = visible | (torch.arange(span, device=q.device) == window)
    scores = scores.masked_fill(~visible[:, None], float("-inf"))
    return torch.einsum("bhtw,bhtdw->bhtd", scores.softmax(dim=-1), v_win)
