"""Memory accounting: the K/V (or latent) state each backend reports against the storage it really
allocates, and how its memory grows with sequence length, measured with torch's profiler."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from rfmodel.attention import build_attention
from rfmodel.attention.base import recording_kv_state
from rfmodel.classifier import RFClassifier
from rfmodel.config import ModelConfig
from rfmodel.rope import Rope

VARIANTS = {
    "mha": ModelConfig(attn_backend="mha"),
    "flash": ModelConfig(attn_backend="flash"),
    "gqa": ModelConfig(attn_backend="gqa"),
    "latent": ModelConfig(attn_backend="latent"),
    "mla-absorbed": ModelConfig(attn_backend="mla", mla_absorb=True),
    "mla-naive": ModelConfig(attn_backend="mla", mla_absorb=False),
    "latte": ModelConfig(attn_backend="latte"),
    "latte-window": ModelConfig(attn_backend="latte", latte_window=8),
}


def rope_for(cfg: ModelConfig, seq_len: int, dtype: torch.dtype) -> Rope:
    return Rope.build(seq_len, cfg.rope_dim, cfg.rope_base, torch.device("cpu"), dtype)


def storage_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of the distinct allocations behind `tensors` (a view counts its whole buffer)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_reported_state_is_the_storage_the_backend_allocates(name, dtype):
    cfg = VARIANTS[name]
    mixer = build_attention(cfg).to(dtype).eval()
    for batch, seq_len in ((1, 16), (3, 40)):
        x = torch.randn(batch, seq_len, cfg.d_model, dtype=dtype)
        mask = torch.ones(batch, seq_len, dtype=torch.bool)
        mask[0, seq_len // 2 :] = False
        with torch.inference_mode(), recording_kv_state() as recorded:
            mixer(x, mask, rope_for(cfg, seq_len, dtype))
        assert recorded, "the backend reported no state tensors"
        assert storage_bytes(recorded) == mixer.kv_state_bytes(batch, seq_len, dtype)


@pytest.mark.parametrize("name", ["mha", "gqa", "mla-absorbed", "latte-window"])
def test_model_kv_memory_sums_the_layers(name):
    cfg = ModelConfig(**{**VARIANTS[name].to_dict(), "n_features": 12, "n_layers": 3})
    model = RFClassifier(cfg).eval()
    with torch.inference_mode(), recording_kv_state() as recorded:
        model(torch.randn(2, 24, 12))
    assert storage_bytes(recorded) == model.kv_memory_bytes(2, 24)
    assert model.double().kv_memory_bytes(2, 24) == 2 * storage_bytes(recorded)


def test_state_sizes_rank_as_designed():
    """MLA's absorbed latent is far smaller than mha's K/V, gqa halves it (2 of 4 heads)."""
    kv = {name: build_attention(cfg).kv_state_numel(1, 255) for name, cfg in VARIANTS.items()}
    assert kv["gqa"] * 2 == kv["mha"] == kv["flash"]
    assert kv["mla-absorbed"] * 3 < kv["mha"] < kv["mla-naive"]


@pytest.fixture
def one_thread():
    # SDPA's CPU kernels keep a scratch buffer per thread: one thread keeps that constant small, so
    # what is measured is what grows with the sequence
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def peak_bytes(cfg: ModelConfig, seq_len: int) -> int:
    """Peak CPU memory allocated during one mixer forward, from the profiler's allocation events."""
    torch.manual_seed(0)
    mixer = build_attention(cfg).eval()
    x = torch.randn(1, seq_len, cfg.d_model)
    mask = torch.ones(1, seq_len, dtype=torch.bool)
    mask[:, -3:] = False
    rope = rope_for(cfg, seq_len, torch.float32)
    with (
        torch.inference_mode(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        mixer(x, mask, rope)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()  # negative for a free
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("mha", 12.0, 17.0),  # the [T, T] scores dominate: x16
        ("latent", 3.0, 5.0),
        ("latte", 3.0, 5.0),
        ("latte-window", 3.0, 5.0),
        ("flash", 3.0, 5.0),
        ("mla-absorbed", 3.0, 5.0),
    ],
)
@pytest.mark.usefixtures("one_thread")
def test_memory_growth_with_length(name, low, high):
    """Peak memory at 4x the length: x4 for linear-memory backends, x16 for the quadratic one."""
    growth = peak_bytes(VARIANTS[name], 2048) / peak_bytes(VARIANTS[name], 512)
    assert low < growth < high, f"{name}: x{growth:.2f} memory for x4 tokens"
