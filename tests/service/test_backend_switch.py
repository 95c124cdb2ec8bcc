"""RFCLS_ATTN_BACKEND picks the attention backend the service runs and reports."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from live_servers import ServerProcess, metric

from preprocessing.formats import encode
from rfmodel.bundle import shipped_model_dir
from rfmodel.config import BACKENDS

BINARY = {"Content-Type": "application/octet-stream"}


def classify(url: str, body: bytes) -> dict:
    r = httpx.post(f"{url}/v1/classify?format=cf32&top_k=5", content=body, headers=BINARY)
    assert r.status_code == 200, r.text
    return r.json()


def test_flash_runs_the_mha_weights_and_says_so(server, tiny_bundle):
    rng = np.random.default_rng(5)
    body = encode((0.3 * (rng.standard_normal(3000) + 1j * rng.standard_normal(3000))), "cf32")
    env = {"RFCLS_MODEL_DIR": str(tiny_bundle), "RFCLS_ATTN_BACKEND": "flash"}
    with ServerProcess(env) as flash:
        model = httpx.get(f"{flash.url}/v1/model").json()
        assert model["backend"] == "flash" and model["model"]["attn_backend"] == "flash"
        info = {"backend": "flash", "device": "cpu", "precision": "float32"}
        info["model_version"] = model["version"]
        assert metric(httpx.get(f"{flash.url}/metrics").text, "rfcls_model_info", **info) == 1
        by_flash = classify(flash.url, body)
    by_mha = classify(server.url, body)
    assert (by_flash["backend"], by_mha["backend"]) == ("flash", "mha")
    # same weights, another kernel: the same probabilities
    for a, b in zip(by_flash["frames"][0]["top_k"], by_mha["frames"][0]["top_k"], strict=True):
        assert a["label"] == b["label"]
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)


SHIPPED = [b for b in BACKENDS if (shipped_model_dir(b) / "model.safetensors").is_file()]


@pytest.mark.skipif(not SHIPPED, reason="no trained weights shipped yet")
@pytest.mark.parametrize("backend", SHIPPED)
def test_shipped_weights_follow_the_backend(backend):
    with ServerProcess({"RFCLS_ATTN_BACKEND": backend}) as s:
        model = httpx.get(f"{s.url}/v1/model").json()
        assert model["backend"] == backend
        info = {"backend": backend, "device": "cpu", "precision": "float32"}
        info["model_version"] = model["version"]
        assert metric(httpx.get(f"{s.url}/metrics").text, "rfcls_model_info", **info) == 1
