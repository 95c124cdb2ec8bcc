"""RFClassifier: padding never leaks into logits, inputs are checked, weights move between the
backends that share them, and the saved config is enough to rebuild the model."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from rfmodel.classifier import SCALE_FLOOR, RFClassifier
from rfmodel.config import BACKENDS, ModelConfig
from rfmodel.norms import RMSNorm

F64 = torch.float64
TINY = dict(n_features=10, n_classes=5, d_model=32, n_layers=2, n_heads=4, n_latents=6)
LENGTHS = (21, 16, 9)


def tiny_model(seed: int = 0, **overrides) -> RFClassifier:
    torch.manual_seed(seed)
    return RFClassifier(ModelConfig(**{**TINY, **overrides})).to(F64).eval()


def padded_batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randn(n, TINY["n_features"], generator=g, dtype=F64) for n in LENGTHS]
    t = max(LENGTHS)
    x = torch.full((len(seqs), t, TINY["n_features"]), float("nan"), dtype=F64)
    mask = torch.zeros(len(seqs), t, dtype=torch.bool)
    for b, s in enumerate(seqs):
        x[b, : len(s)], mask[b, : len(s)] = s, True
    return seqs, x, mask


VARIANTS = [{"attn_backend": b} for b in BACKENDS] + [
    {"attn_backend": "mla", "mla_absorb": False, "q_lora_rank": 12},
    {"attn_backend": "latte", "latte_window": 3},
    {"attn_backend": "mha", "norm": "layernorm"},
    {"attn_backend": "latent", "pool": "attention"},
]


@pytest.mark.parametrize("overrides", VARIANTS, ids=lambda o: "-".join(map(str, o.values())))
def test_logits_do_not_depend_on_padding(overrides):
    model = tiny_model(**overrides)
    seqs, x, mask = padded_batch()  # padding holds NaN: any leak poisons the logits
    logits = model(x, mask)
    assert logits.shape == (len(seqs), TINY["n_classes"])
    assert torch.isfinite(logits).all()
    for b, s in enumerate(seqs):
        alone = model(s[None], None)
        torch.testing.assert_close(logits[b : b + 1], alone, rtol=1e-10, atol=1e-10)


@torch.no_grad()
def test_attention_pooling_is_a_softmax_over_the_real_frames():
    model = tiny_model(pool="attention")
    model.pool_query.normal_()
    _, x, mask = padded_batch()
    final = {}
    model.norm.register_forward_hook(lambda module, args, out: final.update(h=out))
    logits = model(x, mask)
    q, d = model.pool_query, TINY["d_model"]
    for b, n in enumerate(LENGTHS):
        h = final["h"][b, :n]  # [n, D]: the real frames only
        scores = [float(h[t] @ q) / math.sqrt(d) for t in range(n)]
        top = max(scores)
        weights = [math.exp(s - top) for s in scores]
        pooled = sum(w * h[t] for t, w in enumerate(weights)) / sum(weights)
        torch.testing.assert_close(logits[b], model.head(pooled), rtol=1e-10, atol=1e-10)


def test_attention_pooling_starts_as_the_mean():
    mean = tiny_model(seed=3)
    attention = tiny_model(seed=4, pool="attention")
    missing, unexpected = attention.load_state_dict(mean.state_dict(), strict=False)
    assert missing == ["pool_query"] and not unexpected
    _, x, mask = padded_batch()
    torch.testing.assert_close(attention(x, mask), mean(x, mask), rtol=1e-10, atol=1e-10)


def test_all_real_mask_equals_no_mask():
    model = tiny_model(attn_backend="flash")
    x = torch.randn(2, 17, TINY["n_features"], dtype=F64)
    torch.testing.assert_close(model(x, torch.ones(2, 17, dtype=torch.bool)), model(x, None))


def test_lengths_across_the_supported_range_run():
    model = tiny_model(attn_backend="latte", latte_window=4).float()
    for t in (16, 1000):
        assert model(torch.randn(1, t, TINY["n_features"])).shape == (1, TINY["n_classes"])


@pytest.mark.parametrize(
    ("x_shape", "mask", "field"),
    [
        ((2, 16, 11), None, "features"),
        ((16, 10), None, "features"),
        ((2, 16, 10), torch.ones(2, 16, dtype=torch.int64), "mask"),
        ((2, 16, 10), torch.ones(2, 15, dtype=torch.bool), "mask"),
        ((2, 16, 10), torch.arange(16).expand(2, 16) < torch.tensor([[5], [0]]), "mask"),
        # padding first: latent and latte place RoPE by absolute position
        ((2, 16, 10), torch.arange(16).expand(2, 16) >= torch.tensor([[5], [0]]), "mask"),
    ],
    ids=["features wide", "features flat", "mask int", "mask short", "mask empty", "mask left"],
)
def test_bad_inputs_name_the_field(x_shape, mask, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        tiny_model()(torch.randn(*x_shape, dtype=F64), mask)


@pytest.mark.parametrize(("source", "target"), [("mha", "flash"), ("flash", "mha")])
def test_mha_and_flash_share_weights(source, target):
    a = tiny_model(attn_backend=source)
    b = RFClassifier(ModelConfig(**{**TINY, "attn_backend": target})).to(F64).eval()
    b.load_state_dict(a.state_dict(), strict=True)
    _, x, mask = padded_batch()
    torch.testing.assert_close(b(x, mask), a(x, mask))


def test_config_round_trip_rebuilds_the_same_model():
    model = tiny_model(attn_backend="mla", q_lora_rank=8, norm="layernorm")
    cfg = ModelConfig.from_dict(json.loads(json.dumps(model.cfg.to_dict())))
    rebuilt = RFClassifier(cfg).to(F64).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    _, x, mask = padded_batch()
    torch.testing.assert_close(rebuilt(x, mask), model(x, mask))


@pytest.mark.parametrize(("norm", "kind"), [("rmsnorm", RMSNorm), ("layernorm", nn.LayerNorm)])
def test_norm_choice_is_used_everywhere(norm, kind):
    model = tiny_model(norm=norm)
    norms = [model.norm] + [n for blk in model.blocks for n in (blk.attn_norm, blk.mlp_norm)]
    assert all(isinstance(n, kind) for n in norms)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_mixers_residual_norm_is_the_residual_add_then_the_norm(backend):
    """What a block computes when a backend takes the branch, the add and the next norm in one
    call (latent's fused kernel on a GPU; on the CPU every backend's own two steps)."""
    model = tiny_model(attn_backend=backend)
    block = model.blocks[0]
    x = torch.randn(2, 16, TINY["d_model"], dtype=F64)
    mask = torch.arange(16) < torch.tensor([[16], [9]])
    rope = model.rope(16, x.device, x.dtype)
    h = block.attn_norm(x)
    added, normed = block.attn.residual_norm(h, x, mask, rope, block.mlp_norm)
    want = x + block.attn(h, mask, rope)
    torch.testing.assert_close(added, want)
    torch.testing.assert_close(normed, block.mlp_norm(want))
    assert not block.attn.fuses_residual_norm(x, block.mlp_norm)  # CPU, float64


def test_dropout_is_active_in_training_only():
    model = tiny_model(dropout=0.5)
    x = torch.randn(2, 16, TINY["n_features"], dtype=F64)
    torch.testing.assert_close(model(x), model(x))
    model.train()
    assert not torch.allclose(model(x), model(x))


def test_recording_head_adds_a_linear_map_of_the_layer_normed_recording_features():
    """recording_norm "layer": logits = the transformer's + W (r - mean r) / std r + b, std
    without Bessel's correction (a layer norm without parameters), checked against that formula
    in float64."""
    with_head = tiny_model(recording_head=True, recording_norm="layer")
    without = tiny_model()
    without.load_state_dict(with_head.state_dict(), strict=False)
    seqs, x, mask = padded_batch()
    r = torch.randn(
        len(seqs), TINY["n_features"], dtype=F64, generator=torch.Generator().manual_seed(5)
    )
    # zero at the start: a fine-tune that adds the head starts from the old predictions
    torch.testing.assert_close(with_head(x, mask, r), without(x, mask), rtol=0, atol=0)
    torch.manual_seed(6)
    nn.init.normal_(with_head.recording_head.weight)
    nn.init.normal_(with_head.recording_head.bias)
    normed = (r - r.mean(-1, keepdim=True)) / (
        r.var(-1, unbiased=False, keepdim=True) + 1e-5
    ).sqrt()
    head = with_head.recording_head
    expected = without(x, mask) + normed @ head.weight.T + head.bias
    torch.testing.assert_close(with_head(x, mask, r), expected, rtol=1e-10, atol=1e-10)


def test_a_recording_head_over_two_views_normalises_each_and_adds_its_mlp():
    """Two views of F values, each layer-normed on its own; the logits gain W n + b and the MLP's
    W2 gelu(W1 n + b1) + b2, checked against those formulas in float64."""
    one_layer = dict(recording_layers=1, recording_dropout=0.0)
    with_head = tiny_model(
        recording_head=True,
        recording_views=2,
        recording_hidden=7,
        recording_norm="layer",
        **one_layer,
    )
    without = tiny_model()
    without.load_state_dict(with_head.state_dict(), strict=False)
    seqs, x, mask = padded_batch()
    g = torch.Generator().manual_seed(5)
    r = torch.randn(len(seqs), 2 * TINY["n_features"], dtype=F64, generator=g)
    r[:, TINY["n_features"] :] = 100 * r[:, TINY["n_features"] :] + 30  # another scale
    torch.testing.assert_close(with_head(x, mask, r), without(x, mask), rtol=0, atol=0)
    torch.manual_seed(6)
    for p in (*with_head.recording_head.parameters(), *with_head.recording_mlp.parameters()):
        nn.init.normal_(p)
    views = r.unflatten(-1, (2, TINY["n_features"]))
    normed = (views - views.mean(-1, keepdim=True)) / (
        views.var(-1, unbiased=False, keepdim=True) + 1e-5
    ).sqrt()
    normed = normed.flatten(-2)
    head = with_head.recording_head
    up, _, down = with_head.recording_mlp
    hidden = gelu(normed @ up.weight.T + up.bias)
    expected = (
        without(x, mask) + normed @ head.weight.T + head.bias + hidden @ down.weight.T + down.bias
    )
    torch.testing.assert_close(with_head(x, mask, r), expected, rtol=1e-10, atol=1e-10)


def gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.erf(x / 2**0.5))


def test_the_standard_norm_fits_each_value_and_feeds_a_deeper_mlp():
    """recording_norm "standard": each value shifted by its mean over the fitting recordings and
    scaled by their standard deviation (Bessel-corrected, at least SCALE_FLOOR); logits gain
    W n + b and the MLP's W3 gelu(W2 gelu(W1 n + b1) + b2) + b3, dropout off in eval, checked
    against those formulas in float64."""
    with_head = tiny_model(recording_head=True, recording_views=2, recording_hidden=7)
    assert with_head.cfg.recording_layers == 2 and with_head.cfg.recording_dropout > 0
    without = tiny_model()
    without.load_state_dict(with_head.state_dict(), strict=False)
    width = 2 * TINY["n_features"]
    g = torch.Generator().manual_seed(5)
    # values on different scales and offsets, one constant
    fit = torch.randn(50, width, dtype=F64, generator=g) * torch.logspace(-1, 2, width, dtype=F64)
    fit = fit + torch.linspace(-100, 30, width, dtype=F64)
    fit[:, 3] = 7.0
    with_head.fit_recording_norm(fit)
    shift, scale = fit.mean(0), fit.std(0, unbiased=True).clamp_min(SCALE_FLOOR)
    torch.testing.assert_close(with_head.recording_shift, shift, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(with_head.recording_scale, scale, rtol=1e-12, atol=1e-12)
    assert with_head.recording_scale[3] == SCALE_FLOOR
    seqs, x, mask = padded_batch()
    r = fit[: len(seqs)] + torch.randn(len(seqs), width, dtype=F64, generator=g)
    torch.testing.assert_close(with_head(x, mask, r), without(x, mask), rtol=0, atol=0)
    torch.manual_seed(6)
    for p in (*with_head.recording_head.parameters(), *with_head.recording_mlp.parameters()):
        nn.init.normal_(p)
    normed = (r - shift) / scale
    head = with_head.recording_head
    first, _, _, second, _, _, out = with_head.recording_mlp
    hidden = gelu(gelu(normed @ first.weight.T + first.bias) @ second.weight.T + second.bias)
    expected = (
        without(x, mask) + normed @ head.weight.T + head.bias + hidden @ out.weight.T + out.bias
    )
    torch.testing.assert_close(with_head(x, mask, r), expected, rtol=1e-10, atol=1e-10)
    with_head.train()  # the MLP's dropout draws in training
    assert not torch.allclose(with_head(x, mask, r), with_head(x, mask, r))


HEAD = dict(recording_head=True)


@pytest.mark.parametrize(
    ("head", "recording_shape", "message"),
    [
        (HEAD, None, "recording: expected"),
        (HEAD, (3, 9), "recording: expected"),
        (HEAD, (2, 10), "recording: expected"),
        ({**HEAD, "recording_views": 2}, (3, 10), r"recording: expected \[3, 20\]"),
        ({}, (3, 10), "recording: this model has no recording head"),
    ],
)
def test_recording_features_are_checked(head, recording_shape, message):
    _, x, mask = padded_batch()
    r = None if recording_shape is None else torch.randn(*recording_shape, dtype=F64)
    with pytest.raises(ValueError, match=f"^{message}"):
        tiny_model(**head)(x, mask, r)
