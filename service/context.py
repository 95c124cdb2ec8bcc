"""What the HTTP layer is handed at start: settings, the model's description, the engine and the
metrics. Torch-free, so the protocol layer can depend on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preprocessing.features import FeatureConfig
from service.engine import Engine
from service.loop_lag import LoopLag
from service.metrics import ServiceMetrics
from service.settings import Settings

# The Open Inference Protocol model name; one model per service, whatever its backend.
MODEL_NAME = "rfcls"


@dataclass(frozen=True)
class ModelCard:
    """The served model as clients see it (GET /v1/model, v2 metadata, response fields)."""

    version: str
    backend: str
    norm: str
    classes: tuple[str, ...]
    model_config: dict[str, Any]
    feature_config: FeatureConfig
    device: str
    precision: str  # the model's dtype: float32 or bfloat16
    path: Path
    evaluation: dict[str, Any] | None = None
    name: str = MODEL_NAME


@dataclass(frozen=True)
class ServiceContext:
    settings: Settings
    card: ModelCard
    engine: Engine
    metrics: ServiceMetrics
    loop_lag: LoopLag
