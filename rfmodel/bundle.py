"""A trained model on disk: one directory holding `config.json` (model config, feature config, class
list, version, training record), `model.safetensors` and, once evaluated, `metrics.json`.

Keeping the feature config beside the weights is what stops a service from running a model on
features it was not trained on: the service builds its preprocessing from the bundle, never from its
own defaults.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from preprocessing.features import FeatureConfig
from rfmodel.classifier import RFClassifier
from rfmodel.config import ModelConfig

WEIGHTS_ROOT = Path(__file__).resolve().parent / "weights"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
# the parameters as stored (loading casts them back to the model's float32): half the file, and
# on the held-out set the shipped models' float16 copies changed at most 1 prediction in 5,600
# (docs/model-card.md). Buffers keep their dtype: recording_shift holds dB values near -100,
# where float16 steps by 0.06.
STORED_DTYPE = torch.float16
TRAINED_FEATURES_KEY = "rfcls.features"  # safetensors metadata: the features trained on

# Backends whose parameters are identical, so one set of weights serves all of them.
WEIGHT_FAMILIES = {"mha": "mha", "flash": "mha"}


class BundleError(Exception):
    """A model directory that is missing, incomplete or inconsistent."""


@dataclass
class Bundle:
    model: RFClassifier
    model_config: ModelConfig
    feature_config: FeatureConfig
    classes: tuple[str, ...]
    version: str
    path: Path
    metrics: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)


def weight_family(backend: str) -> str:
    return WEIGHT_FAMILIES.get(backend, backend)


def shipped_models() -> list[str]:
    """The names of the model directories shipped under WEIGHTS_ROOT (e.g. mha-rmsnorm)."""
    return sorted(p.parent.name for p in WEIGHTS_ROOT.glob(f"*/{WEIGHTS_FILE}"))


def shipped_model_dir(backend: str, norm: str = "rmsnorm") -> Path:
    """Where the weights shipped for `backend` with `norm` live (flash shares mha's)."""
    return WEIGHTS_ROOT / f"{weight_family(backend)}-{norm}"


def save_bundle(
    path: str | Path,
    model: RFClassifier,
    feature_config: FeatureConfig,
    classes: list[str] | tuple[str, ...],
    metrics: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    path = Path(path)
    cfg = model.cfg
    if len(classes) != cfg.n_classes:
        raise BundleError(f"{len(classes)} class names for a model with {cfg.n_classes} outputs")
    check_compatible(cfg, feature_config, "")
    parameters = {name for name, _ in model.named_parameters()}
    state = {
        k: v.detach().to("cpu", STORED_DTYPE if k in parameters else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    check_finite(state, f"{path}: ")
    path.mkdir(parents=True, exist_ok=True)
    # the features the weights were trained on travel inside the weights file too, so a
    # config.json edited (or a weights file copied beside another model's) is refused on load
    trained_on = {TRAINED_FEATURES_KEY: json.dumps(feature_config.to_dict(), sort_keys=True)}
    save_file(state, str(path / WEIGHTS_FILE), metadata=trained_on)
    digest = hashlib.sha256((path / WEIGHTS_FILE).read_bytes()).hexdigest()[:12]
    config = {
        "version": f"{weight_family(cfg.attn_backend)}-{cfg.norm}-{digest}",
        "model": cfg.to_dict(),
        "features": feature_config.to_dict(),
        "classes": list(classes),
        "training": training or {},
    }
    (path / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    if metrics is not None:
        write_metrics(path, metrics)
    return path


def read_weights(weights_path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """-> (the tensors, the features they were trained on as stored with them, or None for
    bundles saved before they were)."""
    with safe_open(str(weights_path), "pt") as f:
        stored = (f.metadata() or {}).get(TRAINED_FEATURES_KEY)
        names = f.keys()  # a safe_open handle has keys() but cannot be iterated
        return {name: f.get_tensor(name) for name in names}, stored


def check_trained_features(weights_path: Path, stored: str | None, features: FeatureConfig):
    """The config's features against those stored in the weights file, where it has them."""
    if stored is None:
        return
    trained = FeatureConfig.from_dict(json.loads(stored)).to_dict()
    given = features.to_dict()
    changed = [
        f"{k} {given.get(k)!r} (trained with {v!r})"
        for k, v in trained.items()
        if given.get(k) != v
    ]
    if changed:
        raise BundleError(
            f"{weights_path.parent / CONFIG_FILE}: its features differ from those the weights "
            f"were trained on: {', '.join(changed)}"
        )


def check_finite(state: dict[str, torch.Tensor], where: str) -> None:
    """A diverged run's NaNs, or a value past float16's range (which stores as inf), would
    otherwise load and answer every request with the same class."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not tensor.isfinite().all():
            raise BundleError(f"{where}{name} holds NaN or infinite values")


def model_config_for(features: FeatureConfig, n_classes: int, **fields: Any) -> ModelConfig:
    """A ModelConfig that reads what `features` make: its frame width, and a recording head over
    as many views as they give."""
    return ModelConfig(
        n_features=features.n_features,
        n_classes=n_classes,
        recording_head=features.recording_views > 0,
        recording_views=max(1, features.recording_views),
        **fields,
    )


def check_compatible(model: ModelConfig, features: FeatureConfig, where: str) -> None:
    """The features make what the model reads: as many values per frame, and the recording's
    features exactly when the model has a head for them."""
    if features.n_features != model.n_features:
        raise BundleError(
            f"{where}features give {features.n_features} values per frame, "
            f"the model expects {model.n_features}"
        )
    if model.recording_head != (features.recording_segment > 0):
        raise BundleError(
            f"{where}the model {'has' if model.recording_head else 'has no'} recording head but "
            f"the features have recording_segment {features.recording_segment}"
        )
    if model.recording_head and model.recording_views != features.recording_views:
        raise BundleError(
            f"{where}the model's recording head reads {model.recording_views} of the "
            f"recording's views but the features give {features.recording_views} "
            f"(recording_band_limit {features.recording_band_limit})"
        )


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> None:
    (Path(path) / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")


def read_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise BundleError(f"no {CONFIG_FILE} in model directory {path}")
    try:
        return json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{config_path} is not valid JSON: {exc}") from exc


def load_bundle(
    path: str | Path,
    attn_backend: str | None = None,
    device: str | torch.device = "cpu",
) -> Bundle:
    """Load a model directory. `attn_backend` may swap in a backend with the same weights (mha and
    flash); any other change of backend needs other weights and is refused. A damaged directory
    (truncated weights, a config of the wrong shape or types, weights of another model) is a
    BundleError that names the directory, as a missing file is."""
    path = Path(path)
    try:
        bundle = _read_bundle(path, attn_backend)
    except BundleError:
        raise
    except (ValueError, TypeError, KeyError, RuntimeError, OSError, SafetensorError) as exc:
        # ConfigError and InputError are ValueErrors; load_state_dict raises RuntimeError
        detail = next(iter(str(exc).strip().splitlines()), "")
        raise BundleError(
            f"cannot load the model in {path}: {type(exc).__name__}: {detail}"
        ) from exc
    bundle.model.to(device).eval()
    return bundle


def _read_bundle(path: Path, attn_backend: str | None) -> Bundle:
    raw = read_config(path)
    if not isinstance(raw, dict):
        raise BundleError(f"{path / CONFIG_FILE} holds a {type(raw).__name__}, not an object")
    try:
        model_config = ModelConfig.from_dict(raw["model"])
        feature_config = FeatureConfig.from_dict(raw["features"])
        classes = tuple(raw["classes"]) if isinstance(raw["classes"], list) else ()
    except KeyError as exc:
        raise BundleError(f"{path / CONFIG_FILE} lacks the key {exc}") from exc
    if attn_backend is not None and attn_backend != model_config.attn_backend:
        if weight_family(attn_backend) != weight_family(model_config.attn_backend):
            raise BundleError(
                f"model in {path} was trained with attention backend "
                f"{model_config.attn_backend!r}; its weights cannot run as {attn_backend!r}"
            )
        model_config = ModelConfig.from_dict({**raw["model"], "attn_backend": attn_backend})
    names_ok = all(isinstance(c, str) and c for c in classes) and len(set(classes)) == len(classes)
    if not names_ok or len(classes) != model_config.n_classes:
        raise BundleError(
            f"{path / CONFIG_FILE}: classes must be {model_config.n_classes} distinct names, one "
            f"per output of the model; got {raw['classes']!r}"
        )
    check_compatible(model_config, feature_config, f"{path}: ")
    weights_path = path / WEIGHTS_FILE
    if not weights_path.is_file():
        raise BundleError(f"no {WEIGHTS_FILE} in model directory {path}")
    state, trained_on = read_weights(weights_path)
    check_trained_features(weights_path, trained_on, feature_config)
    check_finite(state, f"{weights_path}: ")
    model = RFClassifier(model_config)
    model.load_state_dict(state, strict=True)
    metrics_path = path / METRICS_FILE
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    return Bundle(
        model=model,
        model_config=model_config,
        feature_config=feature_config,
        classes=classes,
        version=raw.get("version", "unversioned"),
        path=path,
        metrics=metrics,
        training=raw.get("training", {}),
    )
