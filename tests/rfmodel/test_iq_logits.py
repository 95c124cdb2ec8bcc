"""rfmodel.iq_logits: IQ to logits as the service computes it, the same as the features and the
model called one after the other: on the CPU, with and without its second thread, and on a GPU
with its second stream."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from preprocessing.features import FeatureConfig, compute_features
from preprocessing.recording import recording_features
from rfmodel.bundle import model_config_for
from rfmodel.classifier import RFClassifier
from rfmodel.cpus import usable_cpus
from rfmodel.iq_logits import Stages, iq_logits

FEATURES = FeatureConfig(nfft=32, hop=16, recording_segment=256)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def model_with_live_heads(recording: bool = True) -> RFClassifier:
    torch.manual_seed(0)
    features = FEATURES if recording else FeatureConfig(nfft=32, hop=16, recording_segment=0)
    cfg = model_config_for(features, 5, d_model=16, n_layers=1, n_heads=2, recording_hidden=8)
    model = RFClassifier(cfg).eval()
    for head in (model.recording_head, model.recording_mlp):
        for p in head.parameters() if head is not None else ():
            nn.init.normal_(p)  # zero at init: a recording left out would go unnoticed
    return model


def random_iq(batch: int = 3, samples: int = 700) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, samples, dtype=torch.complex64, generator=g)


def one_after_the_other(model: RFClassifier, iq: torch.Tensor, features: FeatureConfig):
    return model(compute_features(iq, features), recording=recording_features(iq, features))


@pytest.mark.parametrize("recording", [True, False], ids=["recording-head", "frames-only"])
@torch.inference_mode()
def test_iq_logits_are_the_features_then_the_model(recording):
    model = model_with_live_heads(recording)
    features = FEATURES if recording else FeatureConfig(nfft=32, hop=16, recording_segment=0)
    iq = random_iq()
    calls = []
    logits = iq_logits(model, iq, features, lambda: calls.append(1))
    assert calls == [1]
    torch.testing.assert_close(logits, one_after_the_other(model, iq, features), rtol=0, atol=0)
    if recording:  # the recording reaches the logits
        without = model.add_recording(
            model.sequence_logits(compute_features(iq, features)),
            torch.zeros_like(recording_features(iq, features)),
        )
        assert not torch.allclose(logits, without)


@pytest.fixture
def torch_threads():
    """Sets torch's intra-op threads for one test, then puts them back."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.skipif(usable_cpus() < 2, reason="needs two usable cores")
@pytest.mark.parametrize("core_free", [True, False], ids=["core-left-free", "all-cores-taken"])
@torch.inference_mode()
def test_on_the_cpu_a_free_core_computes_the_recording_features(core_free, torch_threads):
    torch_threads(1 if core_free else usable_cpus())
    calls = []

    def recording_on(iq, features):
        calls.append((threading.current_thread(), torch.is_inference_mode_enabled()))
        return recording_features(iq, features)

    model = model_with_live_heads()
    iq = random_iq()
    logits = iq_logits(model, iq, FEATURES, stages=Stages(recording_features=recording_on))
    [(thread, inference_mode)] = calls
    assert (thread is not threading.main_thread()) == core_free
    assert inference_mode  # the caller's, which is thread-local
    torch.testing.assert_close(logits, one_after_the_other(model, iq, FEATURES), rtol=0, atol=0)


@pytest.mark.gpu
@needs_cuda
@torch.inference_mode()
def test_on_a_gpu_the_second_stream_gives_the_cpu_logits():
    model = model_with_live_heads()
    iq = random_iq(batch=4, samples=2000)
    expected = one_after_the_other(model, iq, FEATURES)
    cuda = torch.device("cuda")
    on_gpu = model.to(cuda)
    for _ in range(3):  # the side stream's memory is reused between calls
        logits = iq_logits(on_gpu, iq.to(cuda), FEATURES)
        torch.testing.assert_close(logits.cpu(), expected, rtol=1e-4, atol=1e-4)
