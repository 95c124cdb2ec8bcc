from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from live_servers import ServerProcess, build_tiny_bundle

from preprocessing.features import compute_features
from preprocessing.recording import recording_features
from rfmodel.bundle import load_bundle

# Small limits so the limit tests need only small bodies; a long deadline and queue wait so a busy
# test machine cannot turn a slow answer into a 504 or a 503 (both have their own tests). On the
# CPU wherever the tests run: on a GPU machine `auto` would serve from the GPU, and the tests of
# what the server reports about itself expect the CPU (the GPU's own tests are marked gpu).
MAIN_LIMITS = {
    "RFCLS_DEVICE": "cpu",
    "RFCLS_DEADLINE_MS": "30000",
    "RFCLS_MAX_QUEUE_WAIT_MS": "30000",
    "RFCLS_MAX_BODY_BYTES": str(2**20),
    "RFCLS_MAX_JSON_BODY_BYTES": str(2**18),
    "RFCLS_MAX_SAMPLES": "65536",
    "RFCLS_MAX_FRAMES_PER_REQUEST": "16",
    "RFCLS_MAX_BATCH": "8",
}


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny-mha")


@pytest.fixture(scope="session")
def server(tiny_bundle: Path) -> Iterator[ServerProcess]:
    with ServerProcess({"RFCLS_MODEL_DIR": str(tiny_bundle), **MAIN_LIMITS}) as running:
        yield running


@pytest.fixture(scope="session")
def reference(tiny_bundle):
    """Probabilities the model gives each frame on its own (no batching, no padding)."""
    bundle = load_bundle(tiny_bundle)

    def probabilities(frames: list[np.ndarray]) -> np.ndarray:
        rows = []
        with torch.inference_mode():
            for iq in frames:
                iq = torch.from_numpy(np.ascontiguousarray(iq))[None]
                x = compute_features(iq, bundle.feature_config)
                recording = recording_features(iq, bundle.feature_config)
                logits = bundle.model(x, recording=recording)
                rows.append(torch.softmax(logits.double(), dim=-1)[0].numpy())
        return np.stack(rows)

    return probabilities
