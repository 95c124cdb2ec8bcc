"""Every size and choice of the classifier, in one dataclass that is saved beside the weights.

The defaults are sized for the service's 30 ms budget on a 2-core CPU: d_model 128, 4 layers and
4 heads classify a 255-token request in a few milliseconds.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

BACKENDS = ("mha", "flash", "gqa", "latent", "mla", "latte")
NORMS = ("rmsnorm", "layernorm")
POOLS = ("mean", "attention")
RECORDING_NORMS = ("standard", "layer")


# keys whose default came after weights were saved without them: a stored config that lacks one
# predates it, and its model was built without that part
PREDATING_MODEL = {
    "recording_hidden": 0,
    "recording_layers": 1,
    "recording_dropout": 0.0,
    "recording_norm": "layer",
}


class ConfigError(ValueError):
    """A model config field with an invalid value; `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class ModelConfig:
    n_features: int = 1792  # values per token (one FFT frame); preprocessing's default is 7 * 256
    n_classes: int = 14  # len(rfmodel.data.CLASSES); training passes it explicitly
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2  # gqa only: K/V heads, each shared by n_heads // n_kv_heads query heads
    mlp_ratio: int = 4
    norm: str = "rmsnorm"
    norm_eps: float = 1e-5
    attn_backend: str = "mha"
    rope_base: float = 10000.0
    n_latents: int = 32  # latent and latte: M (or L) learned latent states, M << T
    latte_window: int = 0  # latte: local attention over |t - s| <= latte_window mixed in; 0 = off
    kv_lora_rank: int = 64  # mla: width of the joint KV latent c_kv
    q_lora_rank: int | None = None  # mla: low-rank query bottleneck; None = full-rank queries
    qk_rope_head_dim: int = 16  # mla: decoupled RoPE part of each query/key head
    qk_nope_head_dim: int = 32  # mla: position-free part of each query/key head
    v_head_dim: int = 32  # mla: value width per head
    mla_absorb: bool = True  # mla: attend in latent space (W_uk, W_uv absorbed); False: naive
    dropout: float = 0.0  # on the residual branches (attention and MLP outputs)
    pool: str = "mean"  # over the real tokens: "mean", or "attention" (a learned query's softmax)
    # the recording's own features (preprocessing.recording) to the logits as well: a linear
    # head over recording_views vectors of n_features, plus, if recording_hidden > 0, an MLP of
    # recording_layers hidden layers of recording_hidden units (dropout recording_dropout)
    recording_head: bool = False
    recording_views: int = 1
    recording_hidden: int = 256
    recording_layers: int = 2
    recording_dropout: float = 0.2
    # how the heads see the recording's features: "standard", each value shifted and scaled by
    # its mean and spread over training data (the classifier's recording_shift and _scale,
    # fitted by rfmodel.train); "layer", each view scaled over its own values
    recording_norm: str = "standard"

    def __post_init__(self) -> None:
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def n_recording_features(self) -> int:
        """Width of the recording's features (0 without a recording head)."""
        return self.recording_views * self.n_features if self.recording_head else 0

    @property
    def standardises_recording(self) -> bool:
        """Whether the model holds a fitted per-value shift and scale of the recording's
        features (recording_norm "standard" on a recording head)."""
        return self.recording_head and self.recording_norm == "standard"

    @property
    def rope_dim(self) -> int:
        """Width of the rotated part of a query/key head."""
        return self.qk_rope_head_dim if self.attn_backend == "mla" else self.head_dim

    def validate(self) -> None:
        if self.attn_backend not in BACKENDS:
            raise ConfigError(
                "attn_backend",
                f"unknown attention backend {self.attn_backend!r}; valid: {', '.join(BACKENDS)}",
            )
        if self.norm not in NORMS:
            raise ConfigError("norm", f"unknown norm {self.norm!r}; valid: {', '.join(NORMS)}")
        if self.pool not in POOLS:
            raise ConfigError("pool", f"unknown pool {self.pool!r}; valid: {', '.join(POOLS)}")
        if self.recording_norm not in RECORDING_NORMS:
            raise ConfigError(
                "recording_norm",
                f"unknown {self.recording_norm!r}; valid: {', '.join(RECORDING_NORMS)}",
            )
        for name in (
            "n_features",
            "d_model",
            "n_layers",
            "n_heads",
            "n_kv_heads",
            "mlp_ratio",
            "n_latents",
            "kv_lora_rank",
            "qk_rope_head_dim",
            "qk_nope_head_dim",
            "v_head_dim",
            "recording_views",
            "recording_layers",
        ):
            _require_int(name, getattr(self, name), minimum=1)
        _require_int("n_classes", self.n_classes, minimum=2)
        _require_int("latte_window", self.latte_window, minimum=0)
        _require_int("recording_hidden", self.recording_hidden, minimum=0)
        if self.q_lora_rank is not None:
            _require_int("q_lora_rank", self.q_lora_rank, minimum=1)
        for name in ("mla_absorb", "recording_head"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"must be true or false, got {getattr(self, name)!r}")
        _require_number("norm_eps", self.norm_eps, low=0.0, low_open=True)
        _require_number("rope_base", self.rope_base, low=1.0, low_open=True)
        _require_number("dropout", self.dropout, low=0.0, high=1.0)
        _require_number("recording_dropout", self.recording_dropout, low=0.0, high=1.0)
        if self.d_model % self.n_heads:
            raise ConfigError(
                "n_heads", f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}"
            )
        if self.rope_dim % 2:
            field = "qk_rope_head_dim" if self.attn_backend == "mla" else "n_heads"
            raise ConfigError(field, f"the rotary part of a head must be even, got {self.rope_dim}")
        if self.attn_backend == "gqa" and self.n_heads % self.n_kv_heads:
            raise ConfigError(
                "n_kv_heads",
                f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}",
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild a config; unknown keys are refused (they mean a config from another model or
        version), missing keys take their defaults, or their PREDATING_MODEL value."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown model config keys {unknown}")
        return cls(**{**PREDATING_MODEL, **data})


def _require_int(field: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(field, f"must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(field, f"must be >= {minimum}, got {value}")


def _require_number(
    field: str, value: Any, low: float, high: float | None = None, low_open: bool = False
) -> None:
    # NaN passes every comparison below as in range; inf is no size or rate either
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(field, f"must be a finite number, got {value!r}")
    if value < low or (low_open and value == low):
        raise ConfigError(field, f"must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value >= high:
        raise ConfigError(field, f"must be < {high}, got {value}")
