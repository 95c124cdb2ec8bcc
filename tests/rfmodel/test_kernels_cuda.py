"""The GPU fast path (rfmodel.kernels): the Triton attention kernels against explicit float64
formulas, and every layer that takes the fast path against its plain-torch reference."""

from __future__ import annotations

from contextlib import ExitStack
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from rfmodel.attention.latent import LatentAttention
from rfmodel.classifier import MLP, RFClassifier
from rfmodel.config import ModelConfig
from rfmodel.kernels import HAS_TRITON, fast_path, reference_math
from rfmodel.rope import Rope

if HAS_TRITON:
    from rfmodel.kernels import flash_attention, latent_attention

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not (torch.cuda.is_available() and HAS_TRITON), reason="needs a CUDA device and Triton"
    ),
]

HEADS, LATENTS, HEAD_DIM = 8, 32, 32
DTYPES = [torch.bfloat16, torch.float16]
# half precision inputs, fp32 accumulation: a few units in the last place of bf16
TOL = {torch.bfloat16: 2e-2, torch.float16: 3e-3}


def head_views(
    batch: int, tokens: int, dtype: torch.dtype, head_dim: int = HEAD_DIM
) -> list[torch.Tensor]:
    """Random q, k, v as [B, H, T, d] views of one [B, T, 3*H*d] buffer: strided like
    Mixer.project's heads, and not each in its own contiguous buffer."""
    buf = torch.randn(batch, tokens, 3 * HEADS * head_dim, device="cuda", dtype=dtype)
    b, t, _ = buf.shape
    return [x.view(b, t, HEADS, -1).transpose(1, 2) for x in buf.chunk(3, dim=-1)]


def rotated(k: torch.Tensor, rope: Rope) -> torch.Tensor:
    lo, hi = k.double().chunk(2, dim=-1)
    cos, sin = rope.cos.double(), rope.sin.double()
    return torch.cat((lo * cos - hi * sin, lo * sin + hi * cos), dim=-1)


def attention(q, k, v, mask=None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v in float64, the O(T*S) formula; mask [B, S] True = real key;
    k and v with fewer heads than q serve groups of consecutive query heads."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = q.double() @ k.double().transpose(-2, -1) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    return scores.softmax(dim=-1) @ v.double()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("batch", "tokens", "masked"),
    # batch 1 splits the tokens into chunks; 4,000 has a partial last block; masked rows end
    # inside a block and inside a chunk; batch 64 (512 programs) takes the tokens in one chunk
    [(1, 4000, False), (1, 1000, True), (3, 200, True), (64, 513, False), (64, 300, True)],
)
def test_pack_is_latent_attention_over_rotated_keys(dtype, batch, tokens, masked):
    torch.manual_seed(0)
    _, k, v = head_views(batch, tokens, dtype)
    latents = torch.randn(HEADS, LATENTS, HEAD_DIM, device="cuda", dtype=dtype)
    rope = Rope.build(tokens, HEAD_DIM, 10000.0, torch.device("cuda"), dtype)
    mask = padding_mask(batch, tokens) if masked else None
    got = latent_attention.pack(latents, k, v, rope.cos, rope.sin, mask)  # [B, M, H*d]
    want = attention(latents.expand(batch, -1, -1, -1), rotated(k, rope), v, mask)
    want = want.transpose(1, 2).reshape(batch, LATENTS, HEADS * HEAD_DIM)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), want, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("batch", "tokens"), [(1, 4096), (3, 130), (32, 1000)])
def test_unpack_is_token_attention_over_the_summaries(dtype, batch, tokens):
    torch.manual_seed(1)
    q, _, _ = head_views(batch, tokens, dtype)
    k_sum, v_sum, _ = head_views(batch, LATENTS, dtype)
    got = latent_attention.unpack(q, k_sum, v_sum)
    assert got.shape == q.shape and got.transpose(1, 2).is_contiguous()
    torch.testing.assert_close(
        got.double(), attention(q, k_sum, v_sum), rtol=TOL[dtype], atol=TOL[dtype]
    )


WIDTH = HEADS * HEAD_DIM  # d_model at the reference size


def wo_norm_case(batch, tokens, dtype):
    """Random q [B, H, T, d] (a head view of the fused QKV buffer), k_sum, v_sum [B, H, M, d],
    wo [D, H*d] at nn.Linear's scale, x [B, T, D], a norm weight around 1."""
    q, _, _ = head_views(batch, tokens, dtype)
    k_sum, v_sum, _ = head_views(batch, LATENTS, dtype)
    wo = torch.randn(WIDTH, WIDTH, device="cuda", dtype=dtype) / WIDTH**0.5
    x = torch.randn(batch, tokens, WIDTH, device="cuda", dtype=dtype)
    weight = 1 + 0.3 * torch.randn(WIDTH, device="cuda", dtype=dtype)
    return q, k_sum, v_sum, wo, x, weight


def attention_added_and_normed(q, k_sum, v_sum, wo, x, weight, eps=1e-5):
    """x + wo(merged heads of softmax(q k^T / sqrt(d)) v), and its RMSNorm, in float64."""
    b, h, t, d = q.shape
    heads = attention(q, k_sum, v_sum).transpose(1, 2).reshape(b, t, h * d)
    new = x.double() + heads @ wo.double().T
    rms = torch.sqrt(new.pow(2).mean(-1, keepdim=True) + eps)
    return new, new / rms * weight.double()


def check_unpack_wo_norm(case, tol):
    got = latent_attention.unpack_wo_norm(*case, 1e-5)  # (x, normed)
    for got_one, want_one in zip(got, attention_added_and_normed(*case), strict=True):
        assert got_one.dtype == case[0].dtype and torch.isfinite(got_one).all()
        torch.testing.assert_close(got_one.double(), want_one, rtol=tol, atol=tol)
    return got


@pytest.mark.parametrize("dtype", DTYPES)
# 4,096 fills every token block; 100 and 1,000 leave a partial last one (of 64 and of 128);
# batch 1 and a single token are the smallest grids
@pytest.mark.parametrize(("batch", "tokens"), [(1, 4096), (1, 1), (3, 100), (16, 1000)])
def test_unpack_wo_norm_is_the_attention_branch_added_and_normed(dtype, batch, tokens):
    torch.manual_seed(8)
    got_x, got_normed = check_unpack_wo_norm(wo_norm_case(batch, tokens, dtype), TOL[dtype])
    assert got_x.shape == got_normed.shape == (batch, tokens, WIDTH)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "config", latent_attention._unpack_wo_norm_kernel.configs if HAS_TRITON else [], ids=str
)
def test_every_unpack_wo_norm_config(config, dtype, monkeypatch):
    """Autotuning picks one config per size band: each of the others checked on its own."""
    monkeypatch.setattr(latent_attention._unpack_wo_norm_kernel, "configs", [config])
    torch.manual_seed(9)
    check_unpack_wo_norm(wo_norm_case(3, 333, dtype), TOL[dtype])


def test_unpack_wo_norm_keeps_each_heads_softmax_apart():
    """One head's scores far above another's in the same head group: a max shared across the
    group would round the low head's weights to zero, and its softmax to 0/0."""
    torch.manual_seed(10)
    q, *rest = wo_norm_case(2, 200, torch.float16)
    q = q.clone()
    q[:, 0] *= 60  # head 0's logits reach hundreds (exp2(-300) is 0 in fp32), head 1's near one
    check_unpack_wo_norm((q, *rest), 3e-3)


def padding_mask(batch: int, tokens: int) -> torch.Tensor:
    """[B, T] True = real: random lengths, the first row a single token."""
    lengths = torch.randint(1, tokens + 1, (batch, 1), device="cuda")
    lengths[0] = 1
    return torch.arange(tokens, device="cuda") < lengths


def flash_case(batch, tokens, dtype, kv_heads=HEADS, head_dim=HEAD_DIM, masked=True):
    """Random q, k, v (queries scaled up so each row's weights are peaked, not near-uniform),
    K/V heads cut to kv_heads, a random padding mask or None, and the float64 answer."""
    q, k, v = head_views(batch, tokens, dtype, head_dim)
    q, k, v = 4 * q, k[:, :kv_heads], v[:, :kv_heads]
    mask = padding_mask(batch, tokens) if masked else None
    return q, k, v, mask, attention(q, k, v, mask)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("batch", "tokens", "masked", "kv_heads", "head_dim"),
    # 4,096 fills every key block; 1,000 and 192 leave a partial last one (192: of 128, not of
    # 64); masked rows end inside a block, over full blocks at 512; kv_heads 2 is gqa's grouping;
    # head sizes 16 and 64 are the ends of what it takes
    [
        (1, 4096, False, HEADS, 32),
        (2, 1000, False, HEADS, 32),
        (2, 192, False, HEADS, 32),
        (3, 300, True, HEADS, 32),
        (2, 512, True, HEADS, 32),
        (2, 777, True, 2, 32),
        (2, 500, False, HEADS, 16),
        (2, 500, True, HEADS, 64),
    ],
)
def test_flash_kernel_is_softmax_attention(dtype, batch, tokens, masked, kv_heads, head_dim):
    torch.manual_seed(5)
    q, k, v, mask, want = flash_case(batch, tokens, dtype, kv_heads, head_dim, masked)
    got = flash_attention.attention(q, k, v, mask)
    assert got.shape == q.shape and got.transpose(1, 2).is_contiguous()
    torch.testing.assert_close(got.double(), want, rtol=TOL[dtype], atol=TOL[dtype])


def bounded_case(tokens: int, bound: float, kv_heads: int = HEADS):
    """Random bf16 q, k, v, q and k scaled so that the largest of the scores' bounds
    |q| max|k| / sqrt(d) (log2 units) is `bound`."""
    torch.manual_seed(9)
    q, k, v = head_views(2, tokens, torch.bfloat16)
    k, v = k[:, :kv_heads], v[:, :kv_heads]
    scale = (bound / largest_bound(q, k)) ** 0.5
    return scale * q, scale * k, v


def largest_bound(q, k) -> float:
    group = q.shape[1] // k.shape[1]
    key_norm = k.double().norm(dim=-1).amax(dim=-1).repeat_interleave(group, dim=1)
    bound = q.double().norm(dim=-1).amax(dim=-1) * key_norm / q.shape[-1] ** 0.5
    return float(bound.max()) * latent_attention.LOG2E


@pytest.mark.parametrize("limit", [0.0, "default"])
@pytest.mark.parametrize(("bound", "kv_heads", "masked"), [(15.0, HEADS, True), (46.0, 2, False)])
def test_flash_kernel_shifts_by_the_bound_or_by_the_running_max(
    limit, bound, kv_heads, masked, monkeypatch
):
    """Under the limit every block is shifted by its bound, at 0 every block by its running
    max; both are softmax attention. At a bound of 46, near the limit, the smallest weights
    used reach 2^-92."""
    q, k, v = bounded_case(333, bound, kv_heads)
    assert largest_bound(q, k) < flash_attention.BOUND_LIMIT
    if limit != "default":
        monkeypatch.setattr(flash_attention, "BOUND_LIMIT", limit)
    mask = padding_mask(2, 333) if masked else None
    got = flash_attention.attention(q, k, v, mask)
    want = attention(q, k, v, mask)
    torch.testing.assert_close(
        got.double(), want, rtol=TOL[torch.bfloat16], atol=TOL[torch.bfloat16]
    )


def test_the_bound_limit_is_what_keeps_the_weights_in_range(monkeypatch):
    """Far over the limit a shift by the bound sends every weight below fp32's range (the
    answer is wrong), so the limit is what sends those blocks to the running max."""
    q, k, v = bounded_case(256, 2000.0)
    want = attention(q, k, v)
    got = flash_attention.attention(q, k, v, None)
    torch.testing.assert_close(
        got.double(), want, rtol=TOL[torch.bfloat16], atol=TOL[torch.bfloat16]
    )
    monkeypatch.setattr(flash_attention, "BOUND_LIMIT", float("inf"))
    unguarded = flash_attention.attention(q, k, v, None).double()
    assert not torch.allclose(unguarded, want, rtol=0.1, atol=0.1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_flash_kernel_blocks_under_and_over_the_bound_in_one_call(dtype):
    """The first queries' bounds under the limit, the rest far over: each block is computed by
    one of the two launches, and none is left unwritten. fp16 takes the running max for all."""
    q, k, v = bounded_case(500, 15.0)
    q, k, v = q.to(dtype).clone(), k.to(dtype), v.to(dtype)
    q[:, :, 256:] *= 12  # whole blocks of 64 or 128 queries on either side
    mask = padding_mask(2, 500)
    got = flash_attention.attention(q, k, v, mask)
    torch.testing.assert_close(
        got.double(), attention(q, k, v, mask), rtol=TOL[dtype], atol=TOL[dtype]
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", flash_attention.CONFIGS if HAS_TRITON else [], ids=str)
def test_every_flash_tile_config(config, dtype, monkeypatch):
    """Autotuning picks one config per size band: each of the others checked on its own."""
    monkeypatch.setattr(flash_attention._attention_kernel, "configs", [config])
    torch.manual_seed(6)
    q, k, v, mask, want = flash_case(3, 333, dtype, kv_heads=2)
    got = flash_attention.attention(q, k, v, mask)
    torch.testing.assert_close(got.double(), want, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_flash_kernel_with_scores_rising_along_the_keys(dtype):
    """Keys scaled up along the sequence: every row's largest score grows block after block, so
    what the kernel summed over earlier blocks is rescaled again and again (far more often, and by
    far more, than for the random rows above once their first blocks are seen)."""
    torch.manual_seed(7)
    q, k, v = head_views(2, 1000, dtype)
    k = k * torch.linspace(0.5, 6.0, 1000, device="cuda", dtype=dtype)[:, None]
    got = flash_attention.attention(q, k, v, None)
    torch.testing.assert_close(got.double(), attention(q, k, v), rtol=TOL[dtype], atol=TOL[dtype])


def test_flash_kernel_rows_without_keys_and_values_past_fp16():
    """A row with every key padded gives zeros (as SDPA does), and bf16 values beyond fp16's
    range stay finite."""
    q, k, v = head_views(2, 200, torch.bfloat16)
    mask = torch.ones(2, 200, dtype=torch.bool, device="cuda")
    mask[1] = False
    v = v.clone()
    v[0, :, 0] = 1e6
    got = flash_attention.attention(q, k, v, mask)
    assert torch.isfinite(got).all()
    assert (got[1] == 0).all()


def test_batch_offsets_past_2_31_elements():
    """A batch row that starts 2^31 elements into its buffer (about 2.8M tokens a batch in the
    fused QKV layout): 32-bit offsets would wrap and read another row, or unmapped memory."""
    if torch.cuda.get_device_properties(0).total_memory < 16 * 2**30:
        pytest.skip("needs 16 GiB of GPU memory")
    torch.manual_seed(4)
    batch, tokens, width = 3, 100, 3 * HEADS * HEAD_DIM
    row = 2**30 + 256  # elements from one batch row to the next: row 2 starts past 2^31
    buf = torch.zeros((batch - 1) * row + tokens * width, device="cuda", dtype=torch.float16)
    for b in range(batch):
        buf[b * row : b * row + tokens * width].normal_()
    q, k, v = (
        buf.as_strided((batch, HEADS, tokens, HEAD_DIM), (row, HEAD_DIM, width, 1), offset)
        for offset in (0, HEADS * HEAD_DIM, 2 * HEADS * HEAD_DIM)
    )
    latents = torch.randn(HEADS, LATENTS, HEAD_DIM, device="cuda", dtype=torch.float16)
    rope = Rope.build(tokens, HEAD_DIM, 10000.0, torch.device("cuda"), torch.float16)
    summaries = latent_attention.pack(latents, k, v, rope.cos, rope.sin, None)
    want = attention(latents[None], rotated(k[-1:], rope), v[-1:])
    want = want.transpose(1, 2).reshape(1, LATENTS, HEADS * HEAD_DIM)
    torch.testing.assert_close(summaries[-1:].double(), want, rtol=3e-3, atol=3e-3)
    k_sum = torch.randn(batch, HEADS, LATENTS, HEAD_DIM, device="cuda", dtype=torch.float16)
    v_sum = torch.randn_like(k_sum)
    got = latent_attention.unpack(q, k_sum, v_sum)
    torch.testing.assert_close(
        got[-1:].double(), attention(q[-1:], k_sum[-1:], v_sum[-1:]), rtol=3e-3, atol=3e-3
    )
    got = flash_attention.attention(q, k, v, None)
    torch.testing.assert_close(
        got[-1:].double(), attention(q[-1:], k[-1:], v[-1:]), rtol=3e-3, atol=3e-3
    )
    wo = torch.randn(WIDTH, WIDTH, device="cuda", dtype=torch.float16) / WIDTH**0.5
    x = torch.randn(batch, tokens, WIDTH, device="cuda", dtype=torch.float16)
    weight = torch.ones(WIDTH, device="cuda", dtype=torch.float16)
    got = latent_attention.unpack_wo_norm(q, k_sum, v_sum, wo, x, weight, 1e-5)
    want = attention_added_and_normed(q[-1:], k_sum[-1:], v_sum[-1:], wo, x[-1:], weight)
    for got_one, want_one in zip(got, want, strict=True):
        torch.testing.assert_close(got_one[-1:].double(), want_one, rtol=3e-3, atol=3e-3)


def test_the_kernels_take_only_the_shapes_they_are_built_for():
    def latents(m, d):
        return torch.zeros(8, m, d, device="cuda")

    handles = latent_attention.handles
    assert handles(latents(32, 32)) and handles(latents(16, 64))
    assert not handles(latents(32, 24))  # tl.arange needs powers of two
    assert not handles(latents(32, 16))  # a rotated half of 8: under a tensor-core step
    assert not handles(latents(8, 32))

    def wo(width, heads=8):
        return torch.zeros(width, heads * 32, device="cuda")

    fuses = latent_attention.handles_wo_norm
    assert fuses(latents(32, 32), wo(256)) and fuses(latents(32, 32), wo(512))
    assert not fuses(latents(32, 32), wo(384))  # tl.arange over the row needs a power of two
    assert not fuses(latents(32, 32), wo(1024))  # a row of 1,024 fp32 would not fit registers
    assert not fuses(torch.zeros(6, 32, 32, device="cuda"), wo(256, heads=6))
    # 2 heads: a config's group of 4 would not divide them
    assert not fuses(torch.zeros(2, 32, 32, device="cuda"), wo(64, heads=2))
    assert fuses(torch.zeros(4, 32, 32, device="cuda"), wo(128, heads=4))  # the shipped size
    assert not fuses(latents(32, 24), wo(256))  # what `handles` refuses

    def heads(d):
        return torch.zeros(1, 8, 10, d, device="cuda")

    takes = flash_attention.handles
    assert (
        takes(heads(16), heads(16)) and takes(heads(32), heads(32)) and takes(heads(64), heads(64))
    )
    assert not takes(heads(24), heads(24))
    assert not takes(heads(128), heads(128))  # exponentials no longer the bound: SDPA's kernels
    assert not takes(heads(32), heads(64))  # mla's values are wider than its keys


@pytest.mark.parametrize("dtype", DTYPES)
def test_mlp_with_the_gelu_in_the_matmul_epilogue(dtype):
    torch.manual_seed(2)
    mlp = MLP(ModelConfig(d_model=256)).to("cuda", dtype)
    x = torch.randn(3, 1000, 256, device="cuda", dtype=dtype)
    epilogue = mock.patch("torch._addmm_activation", wraps=torch._addmm_activation)
    with torch.inference_mode(), epilogue as fused:
        got = mlp(x)
    assert fused.called
    up, down = mlp.up.weight.double(), mlp.down.weight.double()
    want = F.gelu(x.double() @ up.T) @ down.T
    torch.testing.assert_close(got.double(), want, rtol=TOL[dtype], atol=TOL[dtype])


# mla's latent keys 64 wide (48 + 16 for RoPE) are a head size the flash kernel takes, but
# scaled by mla's own head size, so they stay on SDPA
# latent with a LayerNorm keeps unpack and `wo` apart (the fused kernel ends in an RMSNorm)
@pytest.mark.parametrize(
    ("backend", "overrides", "fuse"),
    [
        ("latent", {}, False),
        ("latent", {}, True),
        ("latent", {"norm": "layernorm"}, True),
        ("flash", {}, False),
        ("gqa", {}, False),
        ("mla", {"kv_lora_rank": 48}, False),
    ],
)
@pytest.mark.parametrize("masked", [False, True])
def test_models_on_the_kernels_match_their_reference(backend, overrides, fuse, masked, monkeypatch):
    monkeypatch.setattr(LatentAttention, "fuse_residual_norm", fuse)
    torch.manual_seed(3)
    cfg = ModelConfig(
        attn_backend=backend, n_features=24, n_classes=5, d_model=256, n_heads=8, **overrides
    )
    model = RFClassifier(cfg).eval().to("cuda", torch.bfloat16)
    x = torch.randn(3, 300, 24, device="cuda", dtype=torch.bfloat16)
    mask = torch.arange(300, device="cuda") < torch.tensor([[300], [170], [9]], device="cuda")
    mask = mask if masked else None
    spies = {
        "pack": mock.patch.object(latent_attention, "pack", wraps=latent_attention.pack),
        "unpack": mock.patch.object(latent_attention, "unpack", wraps=latent_attention.unpack),
        "unpack_wo_norm": mock.patch.object(
            latent_attention, "unpack_wo_norm", wraps=latent_attention.unpack_wo_norm
        ),
        "flash": mock.patch.object(flash_attention, "attention", wraps=flash_attention.attention),
        "epilogue": mock.patch("torch._addmm_activation", wraps=torch._addmm_activation),
    }
    with torch.inference_mode(), ExitStack() as stack:
        calls = {name: stack.enter_context(spy) for name, spy in spies.items()}
        with reference_math():
            want = model(x, mask)
        assert not any(spy.called for spy in calls.values())
        got = model(x, mask)
    assert calls["epilogue"].called
    latent = backend == "latent"
    fused = latent and fuse and cfg.norm == "rmsnorm"
    assert calls["pack"].call_count == (cfg.n_layers if latent else 0)
    # every block's unpack with `wo` and its add and norm, or every block's plain unpack
    assert calls["unpack_wo_norm"].call_count == (cfg.n_layers if fused else 0)
    assert calls["unpack"].call_count == (cfg.n_layers if latent and not fused else 0)
    assert calls["flash"].called == (backend in ("flash", "gqa"))
    torch.testing.assert_close(got.float(), want.float(), rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize(("backend", "fuse"), [("latent", False), ("latent", True), ("gqa", False)])
def test_the_kernels_under_torch_compile(backend, fuse, monkeypatch):
    """torch.compile, as the benchmarks and the service's graphs run them, takes the Triton
    kernels (user-defined kernels, autotuning with pruned configs, inline PTX) and answers as
    eager does."""
    monkeypatch.setattr(LatentAttention, "fuse_residual_norm", fuse)
    torch.manual_seed(7)
    cfg = ModelConfig(attn_backend=backend, n_features=24, n_classes=5, d_model=256, n_heads=8)
    model = RFClassifier(cfg).eval().to("cuda", torch.bfloat16)
    x = torch.randn(2, 256, 24, device="cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        want = model(x, None)
        got = torch.compile(model, dynamic=False)(x, None)
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)


def test_the_flash_kernel_compiled_with_a_mask():
    """Against float64, not bit for bit against eager: Inductor sums the bounds' norms in
    another order, and a shift a few fp32 ulps away rounds some bf16 weights the other way."""
    q, k, v, mask, want = flash_case(2, 300, torch.bfloat16, kv_heads=2)
    attention = torch.compile(flash_attention.attention, dynamic=False)
    with torch.inference_mode():
        got = attention(q, k, v, mask)
    torch.testing.assert_close(
        got.double(), want, rtol=TOL[torch.bfloat16], atol=TOL[torch.bfloat16]
    )


def test_the_fast_path_stays_out_of_autograd_and_fp32():
    x = torch.randn(4, 8, device="cuda", dtype=torch.bfloat16)
    weight = torch.randn(8, 8, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    assert fast_path(x)
    assert not fast_path(x, weight)  # grad mode on, a leaf that wants a gradient
    with torch.no_grad():
        assert fast_path(x, weight)
        assert not fast_path(x.float())
        assert not fast_path(x.cpu())
        with reference_math():
            assert not fast_path(x)
