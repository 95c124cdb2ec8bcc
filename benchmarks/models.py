"""The models the benchmarks time: two fixed sizes per attention backend, where the shipped
weights are, and the input length that gives a token count."""

from __future__ import annotations

from pathlib import Path

import torch

from preprocessing.features import FeatureConfig
from rfmodel.bundle import CONFIG_FILE, WEIGHTS_FILE, model_config_for, shipped_model_dir
from rfmodel.config import ModelConfig
from rfmodel.data import CLASSES

# "default" is the shipped model (ModelConfig defaults); "reference" is the size the docs keep
# fixed across hardware and time so figures stay comparable. Fields not named keep the defaults.
MODEL_SIZES: dict[str, dict[str, int]] = {
    "default": {},
    "reference": {"d_model": 256, "n_heads": 8, "n_layers": 4, "mlp_ratio": 4},
}
FEATURES = FeatureConfig()


def bench_config(size: str, backend: str, norm: str = "rmsnorm") -> ModelConfig:
    if size not in MODEL_SIZES:
        raise ValueError(f"sizes: unknown model size {size!r}; valid: {', '.join(MODEL_SIZES)}")
    return model_config_for(
        FEATURES, len(CLASSES), attn_backend=backend, norm=norm, **MODEL_SIZES[size]
    )


def bench_dtype(size: str, device: torch.device) -> torch.dtype:
    """The reference size runs in bf16 on a GPU; everything runs in float32 on the CPU, whose
    bf16 matmuls are emulated on most CPUs and would time the emulation."""
    return torch.bfloat16 if size == "reference" and device.type == "cuda" else torch.float32


def samples_for_tokens(tokens: int, features: FeatureConfig = FEATURES) -> int:
    """The shortest recording that gives `tokens` frames (one token per FFT frame)."""
    return features.nfft + (tokens - 1) * features.hop


def shipped_weights(backend: str, norm: str) -> Path | None:
    """The trained model directory for backend and norm, or None while none is shipped."""
    path = shipped_model_dir(backend, norm)
    return path if (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file() else None
