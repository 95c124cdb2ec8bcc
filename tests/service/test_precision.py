"""RFCLS_PRECISION: what auto picks where, and a bfloat16 model's answers against float32's."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch
from live_servers import TINY_CLASSES, ServerProcess, metric

from rfmodel.bundle import load_bundle, shipped_model_dir
from rfmodel.data import make_eval_set
from service.inference import TorchRunner, resolve_precision

CPU = torch.device("cpu")
RNG = np.random.default_rng(11)


def frames(lengths: list[int]) -> list[np.ndarray]:
    return [
        (0.3 * (RNG.standard_normal(n) + 1j * RNG.standard_normal(n))).astype(np.complex64)
        for n in lengths
    ]


@pytest.fixture
def native_bf16(monkeypatch):
    """Makes the CPU report native bf16 matmuls (True) or none (False)."""

    def set_native(avx512_bf16: bool, amx: bool = False) -> None:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)

    return set_native


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"),
    [(True, False, torch.bfloat16), (False, True, torch.bfloat16), (False, False, torch.float32)],
)
def test_auto_is_bfloat16_on_a_cpu_with_native_bf16_only(native_bf16, avx512_bf16, amx, expected):
    native_bf16(avx512_bf16, amx)
    assert resolve_precision("auto", CPU) == expected
    assert resolve_precision("auto", torch.device("cuda")) == torch.float32


@pytest.mark.parametrize("choice", ["float32", "bfloat16"])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_an_explicit_precision_is_kept_on_any_device(native_bf16, choice, device):
    native_bf16(True)
    assert resolve_precision(choice, torch.device(device)) == getattr(torch, choice)


@pytest.fixture(scope="module")
def clean_signals() -> list[np.ndarray]:
    """One recording of every class at 20 dB, the last three cut shorter (a mixed-length batch)."""
    iq, _, _ = make_eval_set(5, 1, 4096, snr_values=(20.0,))
    return [row[:n] for row, n in zip(iq, [4096] * 11 + [3000, 2048, 1024], strict=True)]


@pytest.mark.parametrize("mixed", [False, True], ids=["equal-lengths", "mixed-lengths"])
def test_a_bfloat16_runner_answers_as_the_float32_one_does(clean_signals, mixed):
    batch = clean_signals if mixed else clean_signals[:11]
    answers = {}
    for dtype in (torch.float32, torch.bfloat16):
        # the shipped weights: a random model's logits run to hundreds, where bf16 rounding flips
        # answers that a trained model's never come near
        bundle = load_bundle(shipped_model_dir("mha"), device=CPU)
        runner = TorchRunner(bundle.model, bundle.feature_config, CPU, dtype=dtype)
        assert {p.dtype for p in runner.model.parameters()} == {dtype}
        answers[dtype] = runner.run(batch).probabilities
    float32, bfloat16 = answers[torch.float32], answers[torch.bfloat16]
    assert bfloat16.dtype == np.float32
    np.testing.assert_allclose(bfloat16.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(bfloat16.argmax(axis=1), float32.argmax(axis=1))
    np.testing.assert_allclose(bfloat16, float32, atol=0.05)
    assert not np.array_equal(bfloat16, float32)  # the bf16 model did run


def test_a_bfloat16_server_says_so_and_answers(tiny_bundle):
    env = {"RFCLS_MODEL_DIR": str(tiny_bundle), "RFCLS_PRECISION": "bfloat16"}
    with ServerProcess(env) as server:
        model = httpx.get(f"{server.url}/v1/model").json()
        assert model["precision"] == "bfloat16"
        info = {"backend": "mha", "device": "cpu", "precision": "bfloat16"}
        metrics = httpx.get(f"{server.url}/metrics").text
        assert metric(metrics, "rfcls_model_info", model_version=model["version"], **info) == 1
        body = frames([2048])[0].tobytes()
        r = httpx.post(
            f"{server.url}/v1/classify?format=cf32",
            content=body,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 200, r.text
        [frame] = r.json()["frames"]
        assert frame["label"] in TINY_CLASSES and 0 < frame["probability"] <= 1
