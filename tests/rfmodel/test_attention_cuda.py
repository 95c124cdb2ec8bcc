"""The backends on CUDA: same logits as on CPU, and the SDPA-based ones reach the flash kernel when
the batch needs no mask."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from rfmodel.classifier import RFClassifier
from rfmodel.config import BACKENDS, ModelConfig
from rfmodel.kernels import reference_math

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SIZES = dict(n_features=24, n_classes=5, n_layers=2, latte_window=3)


def model_for(backend: str, **overrides) -> RFClassifier:
    torch.manual_seed(0)
    return RFClassifier(ModelConfig(attn_backend=backend, **{**SIZES, **overrides})).eval()


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_logits_match_cpu(backend, full_fp32_matmuls):
    model = model_for(backend)
    x = torch.randn(3, 70, SIZES["n_features"])
    mask = torch.arange(70) < torch.tensor([[70], [41], [16]])
    with torch.inference_mode():
        expected = model(x, mask)
        got = model.cuda()(x.cuda(), mask.cuda()).cpu()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("backend", "overrides"),
    [("flash", {}), ("gqa", {}), ("latent", {}), ("mla", {"mla_absorb": True})],
)
def test_unmasked_batches_run_on_the_flash_kernel(backend, overrides):
    model = model_for(backend, **overrides).to("cuda", torch.bfloat16)
    x = torch.randn(2, 255, SIZES["n_features"], device="cuda", dtype=torch.bfloat16)
    # sdpa_kernel(FLASH_ATTENTION) raises if any attention call cannot use that kernel;
    # reference_math: latent's own Triton kernels would not call SDPA at all
    with torch.inference_mode(), sdpa_kernel(SDPBackend.FLASH_ATTENTION), reference_math():
        logits = model(x, torch.ones(2, 255, dtype=torch.bool, device="cuda"))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("masked", [False, True])
def test_flash_equals_mha_in_bf16(masked):
    mha = model_for("mha").to("cuda", torch.bfloat16)
    flash = model_for("flash").to("cuda", torch.bfloat16)
    flash.load_state_dict(mha.state_dict())
    x = torch.randn(3, 120, SIZES["n_features"], device="cuda", dtype=torch.bfloat16)
    mask = torch.arange(120, device="cuda") < torch.tensor([[120], [77], [20]], device="cuda")
    mask = mask if masked else None
    with torch.inference_mode():
        torch.testing.assert_close(flash(x, mask), mha(x, mask), rtol=3e-2, atol=3e-2)
