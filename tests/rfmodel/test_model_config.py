"""ModelConfig: round trip, refusal of unknown keys and names, field-named errors."""

from __future__ import annotations

import json

import pytest

from preprocessing.features import FeatureConfig
from rfmodel.attention import build_attention
from rfmodel.config import BACKENDS, NORMS, ConfigError, ModelConfig
from rfmodel.data import CLASSES


def test_round_trip_through_json():
    cfg = ModelConfig(attn_backend="mla", q_lora_rank=16, norm="layernorm", latte_window=3)
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_missing_keys_take_defaults():
    # the keys stored configs may predate, given; the rest missing
    head = {"recording_layers": 2, "recording_dropout": 0.2, "recording_norm": "standard"}
    stored = {"attn_backend": "gqa", "recording_hidden": 64, **head}
    assert ModelConfig.from_dict(stored) == ModelConfig(attn_backend="gqa", recording_hidden=64)


def test_a_config_saved_before_the_recording_mlp_and_its_norm_loads_as_it_was_made():
    old = ModelConfig.from_dict({"recording_head": True})
    assert (old.recording_hidden, old.recording_layers, old.recording_dropout) == (0, 1, 0.0)
    assert old.recording_norm == "layer"
    new = ModelConfig()  # what training builds now
    assert (new.recording_hidden, new.recording_layers, new.recording_norm) == (256, 2, "standard")


def test_unknown_keys_are_refused():
    with pytest.raises(ConfigError, match="n_experts"):
        ModelConfig.from_dict({**ModelConfig().to_dict(), "n_experts": 8})


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ValueError, match="attn_backend") as err:
        ModelConfig(attn_backend="linformer")
    assert all(name in str(err.value) for name in BACKENDS)
    assert err.value.field == "attn_backend"


def test_unknown_norm_lists_the_valid_ones():
    with pytest.raises(ValueError, match="norm") as err:
        ModelConfig.from_dict({"norm": "batchnorm"})
    assert all(name in str(err.value) for name in NORMS)


def test_build_attention_revalidates():
    cfg = ModelConfig()
    object.__setattr__(cfg, "attn_backend", "performer")  # bypass the frozen dataclass
    with pytest.raises(ConfigError, match="mha, flash, gqa, latent, mla, latte"):
        build_attention(cfg)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"d_model": 130}, "n_heads"),  # not divisible by 4 heads
        ({"d_model": 12, "n_heads": 4}, "n_heads"),  # odd head width cannot be rotated
        ({"attn_backend": "gqa", "n_kv_heads": 3}, "n_kv_heads"),
        ({"attn_backend": "mla", "qk_rope_head_dim": 5}, "qk_rope_head_dim"),
        ({"n_classes": 1}, "n_classes"),
        ({"n_layers": 0}, "n_layers"),
        ({"n_heads": 2.0}, "n_heads"),
        ({"latte_window": -1}, "latte_window"),
        ({"q_lora_rank": 0}, "q_lora_rank"),
        ({"dropout": 1.0}, "dropout"),
        ({"norm_eps": 0.0}, "norm_eps"),
        ({"norm_eps": float("nan")}, "norm_eps"),  # NaN compares as in range
        ({"dropout": float("nan")}, "dropout"),
        ({"rope_base": float("inf")}, "rope_base"),
        ({"rope_base": "10000"}, "rope_base"),
        ({"mla_absorb": 1}, "mla_absorb"),
        ({"recording_views": 0}, "recording_views"),
        ({"recording_hidden": -1}, "recording_hidden"),
        ({"recording_layers": 0}, "recording_layers"),
        ({"recording_dropout": 1.0}, "recording_dropout"),
        ({"recording_norm": "batch"}, "recording_norm"),
    ],
)
def test_invalid_fields_are_named(overrides, field):
    with pytest.raises(ConfigError) as err:
        ModelConfig(**overrides)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}:")


def test_default_gqa_config_is_valid():
    cfg = ModelConfig(attn_backend="gqa")
    assert cfg.n_heads % cfg.n_kv_heads == 0 and cfg.n_kv_heads < cfg.n_heads


def test_default_sizes_match_the_data_and_features():
    assert ModelConfig().n_classes == len(CLASSES)
    assert ModelConfig().n_features == FeatureConfig().n_features
