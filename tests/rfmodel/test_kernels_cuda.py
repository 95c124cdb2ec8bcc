"""The GPU fast path (rfmodel.kernels): latent's Triton kernels against explicit float64 formulas,
and every layer that takes the fast path against its plain-torch reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rfmodel.classifier import MLP, RFClassifier
from rfmodel.config import ModelConfig
from rfmodel.kernels import HAS_TRITON, fast_path, reference_math
from rfmodel.rope import Rope

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


def head_views(batch: int, tokens: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """Random q, k, v as [B, H, T, d] views of one [B, T, 3*H*d] buffer: strided like
    Mixer.project's heads, and not each in its own contiguous buffer."""
    buf = torch.randn(batch, tokens, 3 * HEADS * HEAD_DIM, device="cuda", dtype=dtype)
    b, t, _ = buf.shape
    return [x.view(b, t, HEADS, -1).transpose(1, 2) for x in buf.chunk(3, dim=-1)]


def rotated(k: torch.Tensor, rope: Rope) -> torch.Tensor:
    lo, hi = k.double().chunk(2, dim=-1)
    cos, sin = rope.cos.double(), rope.sin.double()
    return torch.cat((lo * cos - hi * sin, lo * sin + hi * cos), dim=-1)


def attention(q, k, v, mask=None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v in float64, the O(T*S) formula; mask [B, S] True = real key."""
    scores = q.double() @ k.double().transpose(-2, -1) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    return scores.softmax(dim=-1) @ v.double()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("batch", "tokens", "masked"),
    # batch 1 splits the tokens into chunks; 4,000 has a partial last block; masked rows end
    # inside a block and inside a chunk
    [(1, 4000, False), (1, 1000, True), (3, 200, True), (64, 513, False)],
)
def test_pack_is_latent_attention_over_rotated_keys(dtype, batch, tokens, masked):
    from rfmodel.kernels.latent_attention import pack

    torch.manual_seed(0)
    _, k, v = head_views(batch, tokens, dtype)
    latents = torch.randn(HEADS, LATENTS, HEAD_DIM, device="cuda", dtype=dtype)
    rope = Rope.build(tokens, HEAD_DIM, 10000.0, torch.device("cuda"), dtype)
    mask = None
    if masked:
        lengths = torch.randint(1, tokens + 1, (batch, 1), device="cuda")
        lengths[0] = 1
        mask = torch.arange(tokens, device="cuda") < lengths
    got = pack(latents, k, v, rope.cos, rope.sin, mask)  # [B, M, H*d]
    want = attention(latents.expand(batch, -1, -1, -1), rotated(k, rope), v, mask)
    want = want.transpose(1, 2).reshape(batch, LATENTS, HEADS * HEAD_DIM)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), want, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("batch", "tokens"), [(1, 4096), (3, 130), (32, 1000)])
def test_unpack_is_token_attention_over_the_summaries(dtype, batch, tokens):
    from rfmodel.kernels.latent_attention import unpack

    torch.manual_seed(1)
    q, _, _ = head_views(batch, tokens, dtype)
    k_sum, v_sum, _ = head_views(batch, LATENTS, dtype)
    got = unpack(q, k_sum, v_sum)
    assert got.shape == q.shape and got.transpose(1, 2).is_contiguous()
    torch.testing.assert_close(
        got.double(), attention(q, k_sum, v_sum), rtol=TOL[dtype], atol=TOL[dtype]
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_mlp_with_the_gelu_in_the_matmul_epilogue(dtype):
    torch.manual_seed(2)
    mlp = MLP(ModelConfig(d_model=256)).to("cuda", dtype)
    x = torch.randn(3, 1000, 256, device="cuda", dtype=dtype)
    with torch.inference_mode():
        got = mlp(x)
    up, down = mlp.up.weight.double(), mlp.down.weight.double()
    want = F.gelu(x.double() @ up.T) @ down.T
    torch.testing.assert_close(got.double(), want, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("backend", ["latent", "flash", "gqa"])
@pytest.mark.parametrize("masked", [False, True])
def test_models_on_the_kernels_match_their_reference(backend, masked):
    torch.manual_seed(3)
    cfg = ModelConfig(attn_backend=backend, n_features=24, n_classes=5, d_model=256, n_heads=8)
    model = RFClassifier(cfg).eval().to("cuda", torch.bfloat16)
    x = torch.randn(3, 300, 24, device="cuda", dtype=torch.bfloat16)
    mask = torch.arange(300, device="cuda") < torch.tensor([[300], [170], [9]], device="cuda")
    mask = mask if masked else None
    with torch.inference_mode():
        got = model(x, mask)
        with reference_math():
            want = model(x, mask)
    torch.testing.assert_close(got.float(), want.float(), rtol=5e-2, atol=5e-2)


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
