"""Every backend learns a small synthetic task that only attention can solve.

Each token carries a cosine across its 16 features at one of four "frequencies" (random phase,
noise). Class 0: every token of the sequence has the same frequency; class 1: its tokens mix two
different ones. Without attention the linear head sees only the mean of per-token features, and a
mean over a mix of a and b lies between the means for pure a and pure b: no linear head separates
the classes. A control run with the attention output zeroed stays at chance.
"""

from __future__ import annotations

import math

import pytest
import torch

from rfmodel.attention.base import Mixer
from rfmodel.classifier import RFClassifier
from rfmodel.config import ModelConfig

N_FEATURES = 16
STEPS = 200


@pytest.fixture(autouse=True)
def one_thread():
    # a model this small trains fastest on one thread, and stays fast when the cores are shared
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def batch(n: int, g: torch.Generator):
    lengths = torch.randint(16, 33, (n,), generator=g)
    t = int(lengths.max())
    labels = torch.randint(0, 2, (n,), generator=g)
    a = torch.randint(0, 4, (n,), generator=g)
    b = (a + torch.randint(1, 4, (n,), generator=g)) % 4  # b != a
    use_b = (torch.rand(n, t, generator=g) < 0.5) & labels.bool()[:, None]
    cycles = (torch.where(use_b, b[:, None], a[:, None]) + 1).float()[..., None]  # [n, t, 1]
    phase = torch.rand(n, t, 1, generator=g) * 2 * math.pi
    j = torch.arange(N_FEATURES).float()
    x = torch.cos(2 * math.pi * cycles * j / N_FEATURES + phase)
    x = x + 0.5 * torch.randn(n, t, N_FEATURES, generator=g)
    mask = torch.arange(t) < lengths[:, None]
    return x, mask, labels


def train_and_score(cfg: ModelConfig) -> float:
    torch.manual_seed(0)
    model = RFClassifier(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        x, mask, y = batch(32, g)
        loss = torch.nn.functional.cross_entropy(model(x, mask), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, mask, y = batch(512, torch.Generator().manual_seed(99))  # held out
    with torch.no_grad():
        return (model(x, mask).argmax(-1) == y).float().mean().item()


def tiny(backend: str, **overrides) -> ModelConfig:
    sizes = dict(
        n_features=N_FEATURES,
        n_classes=2,
        d_model=32,
        n_layers=2,
        n_heads=2,
        n_kv_heads=1,
        n_latents=8,
        kv_lora_rank=16,
        qk_rope_head_dim=8,
        qk_nope_head_dim=8,
        v_head_dim=16,
    )
    return ModelConfig(attn_backend=backend, **{**sizes, **overrides})


@pytest.mark.slow
@pytest.mark.parametrize(
    "cfg",
    [
        tiny("mha"),
        tiny("flash"),
        tiny("gqa"),
        tiny("latent"),
        tiny("mla"),
        tiny("latte"),
        tiny("latte", latte_window=2),
    ],
    ids=["mha", "flash", "gqa", "latent", "mla", "latte", "latte-window"],
)
def test_backend_learns_a_task_that_needs_attention(cfg):
    assert train_and_score(cfg) > 0.9


@pytest.mark.slow
def test_task_is_not_solvable_without_attention(monkeypatch):
    monkeypatch.setattr(Mixer, "forward", lambda self, x, mask, rope: torch.zeros_like(x))
    assert train_and_score(tiny("mha")) < 0.65


@pytest.mark.parametrize(
    "cfg",
    [tiny(b) for b in ("mha", "gqa", "latent", "mla", "latte")]
    + [tiny("mla", mla_absorb=False, q_lora_rank=8), tiny("latte", latte_window=2)]
    + [tiny("mha", recording_head=True)],
)
def test_every_parameter_gets_a_gradient(cfg):
    torch.manual_seed(0)
    model = RFClassifier(cfg)
    x, mask, y = batch(8, torch.Generator().manual_seed(3))
    # the recording head starts at zero: its gradient is what has to reach it
    recording = torch.randn(x.shape[0], cfg.n_recording_features) if cfg.recording_head else None
    if model.recording_mlp is not None:
        # its output layer starts at zero too, which holds its first layer's gradient at zero
        # until that layer moves
        torch.nn.init.normal_(model.recording_mlp[-1].weight)
    torch.nn.functional.cross_entropy(model(x, mask, recording), y).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not dead, f"no gradient reaches {dead}"
