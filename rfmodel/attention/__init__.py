"""The attention adapter: `build_attention(cfg)` returns the configured backend's mixer. A block
calls every mixer the same way, `mixer(x, mask, rope)`, and each mixer's core call is
`attn(q, k, v, mask, rope)`."""

from __future__ import annotations

from rfmodel.attention.base import Mixer
from rfmodel.attention.flash import FlashAttention
from rfmodel.attention.gqa import GroupedQueryAttention
from rfmodel.attention.latent import LatentAttention
from rfmodel.attention.latte import LatteAttention
from rfmodel.attention.mha import MultiHeadAttention
from rfmodel.attention.mla import MultiHeadLatentAttention
from rfmodel.config import BACKENDS, ModelConfig

MIXERS: dict[str, type[Mixer]] = {
    "mha": MultiHeadAttention,
    "flash": FlashAttention,
    "gqa": GroupedQueryAttention,
    "latent": LatentAttention,
    "mla": MultiHeadLatentAttention,
    "latte": LatteAttention,
}


def build_attention(cfg: ModelConfig) -> Mixer:
    cfg.validate()  # an unknown backend name fails here, with the list of valid ones
    return MIXERS[cfg.attn_backend](cfg)


__all__ = ["BACKENDS", "MIXERS", "Mixer", "build_attention"]
