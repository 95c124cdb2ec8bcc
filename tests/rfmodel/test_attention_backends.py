"""Every attention backend against an explicit float64 reference built here from its weights:
softmax over a full score matrix, RoPE as complex multiplication, Latte's [T, T] token weights."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from rfmodel.attention import MIXERS, build_attention
from rfmodel.attention.base import Mixer
from rfmodel.config import BACKENDS, ModelConfig
from rfmodel.rope import Rope

F64 = torch.float64
BATCH, SEQ = 3, 13
LENGTHS = (13, 9, 4)  # real tokens per sequence; the rest is padding
SMALL = dict(
    n_features=8,
    d_model=32,
    n_heads=4,
    n_kv_heads=2,
    n_latents=5,
    kv_lora_rank=12,
    qk_rope_head_dim=4,
    qk_nope_head_dim=6,
    v_head_dim=5,
    rope_base=100.0,  # fast enough rotation that positions 0..12 differ visibly
)


def small_cfg(backend: str, **overrides) -> ModelConfig:
    return ModelConfig(attn_backend=backend, **{**SMALL, **overrides})


def make_mixer(cfg: ModelConfig, seed: int = 0) -> Mixer:
    torch.manual_seed(seed)
    mixer = build_attention(cfg).to(F64).eval()
    with torch.no_grad():
        for p in mixer.parameters():  # random gains too, not the ones RMSNorm starts with
            p.normal_(0.0, 0.4)
    return mixer


def make_inputs(cfg: ModelConfig, masked: bool, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, SEQ, cfg.d_model, generator=g, dtype=F64)
    mask = torch.arange(SEQ) < torch.tensor(LENGTHS)[:, None] if masked else None
    rope = Rope.build(SEQ, cfg.rope_dim, cfg.rope_base, torch.device("cpu"), F64)
    return x, mask, rope


# ---- the reference ------------------------------------------------------------------------------


def ref_rotate(x: Tensor, base: float) -> Tensor:
    """RoPE as complex multiplication: pair (x_i, x_{i+d/2}) at position t times e^{i t theta_i}."""
    t, d = x.shape[-2], x.shape[-1]
    theta = base ** (-torch.arange(0, d, 2, dtype=F64) / d)
    angle = torch.arange(t, dtype=F64)[:, None] * theta  # [T, d/2]
    z = torch.complex(x[..., : d // 2], x[..., d // 2 :]) * torch.polar(
        torch.ones_like(angle), angle
    )
    return torch.cat((z.real, z.imag), dim=-1)


def ref_weights(scores: Tensor, key_real: Tensor | None) -> Tensor:
    """Softmax over the last axis with excluded keys given weight exactly 0."""
    if key_real is None:
        key_real = torch.ones(scores.shape[-1], dtype=torch.bool)
    key_real = key_real.expand_as(scores)
    top = scores.masked_fill(~key_real, -1e300).amax(-1, keepdim=True)
    e = torch.exp(scores - top) * key_real
    return e / e.sum(-1, keepdim=True)


def ref_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float) -> Tensor:
    """q [B, H, T, d], k [B, H, S, d], v [B, H, S, dv]: the full [T, S] score matrix."""
    scores = torch.einsum("bhtd,bhsd->bhts", q, k) * scale
    return ref_weights(scores, None if mask is None else mask[:, None, None, :]) @ v


def heads(x: Tensor, weight: Tensor, n_heads: int) -> Tensor:
    b, t, _ = x.shape
    return (x @ weight.T).view(b, t, n_heads, -1).transpose(1, 2)


def output(y: Tensor, wo: Tensor) -> Tensor:
    b, h, t, d = y.shape
    return y.transpose(1, 2).reshape(b, t, h * d) @ wo.T


def ref_rmsnorm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def ref_mha(m, x, mask, cfg, n_kv_heads):
    q = ref_rotate(heads(x, m.wq.weight, cfg.n_heads), cfg.rope_base)
    k = ref_rotate(heads(x, m.wk.weight, n_kv_heads), cfg.rope_base)
    v = heads(x, m.wv.weight, n_kv_heads)
    group = cfg.n_heads // n_kv_heads  # repeat-KV: query head h reads K/V head h // group
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    return output(ref_attention(q, k, v, mask, cfg.head_dim**-0.5), m.wo.weight)


def ref_mla(m, x, mask, cfg):
    h, nope, rope_d, vd, r = (
        cfg.n_heads,
        cfg.qk_nope_head_dim,
        cfg.qk_rope_head_dim,
        cfg.v_head_dim,
        cfg.kv_lora_rank,
    )
    if cfg.q_lora_rank is None:
        q = heads(x, m.wq.weight, h)
    else:
        down, norm, up = m.wq
        q = heads(ref_rmsnorm(x @ down.weight.T, norm.weight, cfg.norm_eps), up.weight, h)
    q = torch.cat((q[..., :nope], ref_rotate(q[..., nope:], cfg.rope_base)), dim=-1)
    kv = x @ m.wkv_a.weight.T
    c_kv = ref_rmsnorm(kv[..., :r], m.kv_norm.weight, cfg.norm_eps)  # [B, T, r]
    k_pe = ref_rotate(kv[..., r:], cfg.rope_base)  # [B, T, rope], one per token
    up = heads(c_kv, m.wkv_b.weight, h)  # [B, H, T, nope + v]
    k = torch.cat((up[..., :nope], k_pe[:, None].expand(-1, h, -1, -1)), dim=-1)
    y = ref_attention(q, k, up[..., nope:], mask, (nope + rope_d) ** -0.5)
    assert y.shape[-1] == vd
    return output(y, m.wo.weight)


def ref_latent(m, x, mask, cfg):
    h, d = cfg.n_heads, cfg.head_dim
    q = heads(x, m.wq.weight, h)
    k = ref_rotate(heads(x, m.wk.weight, h), cfg.rope_base)
    v = heads(x, m.wv.weight, h)
    latents = m.latents.expand(x.shape[0], -1, -1, -1)
    summaries = ref_attention(latents, k, v, mask, d**-0.5)  # step 1: [B, H, M, d]
    s = summaries.transpose(1, 2).reshape(x.shape[0], cfg.n_latents, cfg.d_model)
    k2, v2 = heads(s, m.wk_summary.weight, h), heads(s, m.wv_summary.weight, h)
    return output(ref_attention(q, k2, v2, None, d**-0.5), m.wo.weight)  # step 2


def latte_token_weights(m, x, mask, cfg) -> Tensor:
    """The full [B, H, T, T] matrix sum_l p(l|t) p(s|l) (+ p(local|t) p(s|local, t))."""
    h, n_lat, w = cfg.n_heads, cfg.n_latents, cfg.latte_window
    q = heads(x, m.wq.weight, h)
    k = ref_rotate(heads(x, m.wk.weight, h), cfg.rope_base)
    key_real = None if mask is None else mask[:, None, None, :]
    p_s_l = ref_weights(torch.einsum("hld,bhsd->bhls", m.latent_queries, k), key_real)
    p_l_t = ref_weights(torch.einsum("bhtd,hld->bhtl", q, m.latent_keys), None)
    weights = p_l_t[..., :n_lat] @ p_s_l  # [B, H, T, T]
    if w:
        t = torch.arange(x.shape[1])
        near = (t[:, None] - t[None, :]).abs() <= w  # [T, T]
        visible = near if mask is None else near & mask[:, None, None, :]
        visible = visible | torch.eye(x.shape[1], dtype=torch.bool)  # padded rows: self only
        scores = ref_rotate(q, cfg.rope_base) @ k.transpose(-1, -2) * cfg.head_dim**-0.5
        weights = weights + p_l_t[..., n_lat:] * ref_weights(scores, visible)
    return weights


def ref_latte(m, x, mask, cfg):
    v = heads(x, m.wv.weight, cfg.n_heads)
    return output(latte_token_weights(m, x, mask, cfg) @ v, m.wo.weight)


# ---- backends against the reference ------------------------------------------------------------


def test_every_backend_has_a_mixer():
    assert tuple(MIXERS) == BACKENDS


@pytest.mark.parametrize("masked", [False, True])
def test_mha_matches_reference(masked):
    cfg = small_cfg("mha")
    m = make_mixer(cfg)
    x, mask, rope = make_inputs(cfg, masked)
    torch.testing.assert_close(m(x, mask, rope), ref_mha(m, x, mask, cfg, cfg.n_heads))


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("masked", [False, True])
def test_flash_equals_mha_with_the_same_weights(masked, dtype):
    mha = make_mixer(small_cfg("mha")).to(dtype)
    flash = build_attention(small_cfg("flash")).to(dtype)
    flash.load_state_dict(mha.state_dict(), strict=True)
    x, mask, _ = make_inputs(small_cfg("mha"), masked)
    rope = Rope.build(SEQ, 8, 100.0, torch.device("cpu"), dtype)
    torch.testing.assert_close(flash(x.to(dtype), mask, rope), mha(x.to(dtype), mask, rope))


@pytest.mark.parametrize("masked", [False, True])
def test_gqa_with_all_kv_heads_equals_mha(masked):
    mha = make_mixer(small_cfg("mha"))
    gqa = build_attention(small_cfg("gqa", n_kv_heads=4)).to(F64)
    gqa.load_state_dict(mha.state_dict(), strict=True)
    x, mask, rope = make_inputs(small_cfg("mha"), masked)
    torch.testing.assert_close(gqa(x, mask, rope), mha(x, mask, rope))


@pytest.mark.parametrize("n_kv_heads", [1, 2])
@pytest.mark.parametrize("masked", [False, True])
def test_gqa_matches_repeat_kv_reference(masked, n_kv_heads):
    cfg = small_cfg("gqa", n_kv_heads=n_kv_heads)
    m = make_mixer(cfg)
    assert m.wk.weight.shape[0] == n_kv_heads * cfg.head_dim
    x, mask, rope = make_inputs(cfg, masked)
    torch.testing.assert_close(m(x, mask, rope), ref_mha(m, x, mask, cfg, n_kv_heads))


@pytest.mark.parametrize("q_lora_rank", [None, 10])
@pytest.mark.parametrize("masked", [False, True])
def test_mla_naive_and_absorbed_agree_with_reference(masked, q_lora_rank):
    naive_cfg = small_cfg("mla", mla_absorb=False, q_lora_rank=q_lora_rank)
    naive = make_mixer(naive_cfg)
    absorbed = build_attention(small_cfg("mla", mla_absorb=True, q_lora_rank=q_lora_rank))
    absorbed = absorbed.to(F64)
    absorbed.load_state_dict(naive.state_dict(), strict=True)
    x, mask, rope = make_inputs(naive_cfg, masked)
    y_naive, y_absorbed = naive(x, mask, rope), absorbed(x, mask, rope)
    torch.testing.assert_close(y_naive, y_absorbed)
    torch.testing.assert_close(y_naive, ref_mla(naive, x, mask, naive_cfg))


@pytest.mark.parametrize("masked", [False, True])
def test_latent_matches_two_step_reference(masked):
    cfg = small_cfg("latent")
    m = make_mixer(cfg)
    x, mask, rope = make_inputs(cfg, masked)
    torch.testing.assert_close(m(x, mask, rope), ref_latent(m, x, mask, cfg))


@pytest.mark.parametrize("window", [0, 2])
@pytest.mark.parametrize("masked", [False, True])
def test_latte_matches_explicit_token_weights(masked, window):
    cfg = small_cfg("latte", latte_window=window)
    m = make_mixer(cfg)
    x, mask, rope = make_inputs(cfg, masked)
    torch.testing.assert_close(m(x, mask, rope), ref_latte(m, x, mask, cfg))


@pytest.mark.parametrize("window", [0, 1, 3])
def test_latte_token_weights_are_a_distribution(window):
    """One-hot values make the core's output its own [T, T] weight matrix: read it and check it is a
    probability distribution, and a real token's is over real tokens only."""
    cfg = small_cfg("latte", latte_window=window)
    m = make_mixer(cfg)
    x, mask, rope = make_inputs(cfg, masked=True)
    q, k, _ = m.project(x)
    one_hot = torch.eye(SEQ, dtype=F64).expand(BATCH, cfg.n_heads, SEQ, SEQ)
    weights = m.attn(q, k, one_hot, mask, rope)  # [B, H, T, T]
    assert torch.isfinite(weights).all()
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(BATCH, cfg.n_heads, SEQ, dtype=F64))
    real_reads_padding = mask[:, None, :, None] & ~mask[:, None, None, :]  # [B, 1, T, T]
    assert (weights.masked_select(real_reads_padding) == 0).all()
    torch.testing.assert_close(weights, latte_token_weights(m, x, mask, cfg))


BACKEND_VARIANTS = [
    small_cfg("mha"),
    small_cfg("flash"),
    small_cfg("gqa"),
    small_cfg("latent"),
    small_cfg("mla", mla_absorb=True),
    small_cfg("mla", mla_absorb=False, q_lora_rank=10),
    small_cfg("latte"),
    small_cfg("latte", latte_window=2),
]


def variant_id(cfg: ModelConfig) -> str:
    extra = {"mla": f"-absorb{cfg.mla_absorb}", "latte": f"-window{cfg.latte_window}"}
    return cfg.attn_backend + extra.get(cfg.attn_backend, "")


@pytest.mark.parametrize("cfg", BACKEND_VARIANTS, ids=variant_id)
def test_real_token_outputs_do_not_depend_on_padding(cfg):
    m = make_mixer(cfg)
    x, mask, rope = make_inputs(cfg, masked=True)
    x = x.masked_fill(~mask[..., None], 1e3)  # loud padding: any leak would show
    y = m(x, mask, rope)
    assert torch.isfinite(y).all()
    for b, n in enumerate(LENGTHS):
        alone = m(x[b : b + 1, :n], None, Rope.build(n, cfg.rope_dim, cfg.rope_base, x.device, F64))
        torch.testing.assert_close(y[b : b + 1, :n], alone, rtol=1e-10, atol=1e-10)
