"""The engine's device side on CUDA: same answers as on the CPU, and a batch that runs out of GPU
memory is split until it fits (a real OutOfMemoryError, under a per-process memory cap)."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import torch
from scripted_runner import make_metrics

from rfmodel.bundle import load_bundle
from service.engine import Engine, OutOfMemory, Prediction
from service.inference import TorchRunner

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

RNG = np.random.default_rng(8)


def frames(*lengths: int) -> list[np.ndarray]:
    """Noise, with a tone in every other frame so the measurements have something to find."""
    out = []
    for k, n in enumerate(lengths):
        x = 0.3 * (RNG.standard_normal(n) + 1j * RNG.standard_normal(n))
        if k % 2:
            x += np.exp(2j * np.pi * RNG.uniform(-0.4, 0.4) * np.arange(n))
        out.append(x.astype(np.complex64))
    return out


def runners(bundle_path) -> tuple[TorchRunner, TorchRunner]:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    on_cpu = load_bundle(bundle_path, device=cpu)
    on_gpu = load_bundle(bundle_path, device=cuda)
    return (
        TorchRunner(on_cpu.model, on_cpu.feature_config, cpu),
        TorchRunner(on_gpu.model, on_gpu.feature_config, cuda),
    )


def test_cuda_gives_the_cpu_probabilities(tiny_bundle):
    cpu, gpu = runners(tiny_bundle)
    batch = frames(4096, 3000, 700, 4096)  # mixed lengths: padded and masked
    on_gpu = gpu.run(batch)
    # The features differ between CUDA's and the CPU's FFTs by float32 round-off, and this
    # random tiny model's logits span about 75, so a probability near 0.5 moves by up to about
    # 2e-4 (2.04e-4 measured on an H100); a frame or recording lost moves them by far more.
    on_cpu = cpu.run(batch)
    np.testing.assert_allclose(on_gpu.probabilities, on_cpu.probabilities, atol=1e-3)
    # the tones are found on both; noise-only frames show nothing on either
    assert not np.isnan(on_gpu.signal[1::2]).any()
    np.testing.assert_allclose(on_gpu.signal, on_cpu.signal, rtol=1e-3, atol=1e-4, equal_nan=True)
    assert on_gpu.preprocess_s > 0 and on_gpu.inference_s > 0


class CountingRunner:
    def __init__(self, runner: TorchRunner):
        self.runner = runner
        self.calls: list[tuple[int, bool]] = []  # (frames, ran out of memory)

    def run(self, batch):
        try:
            out = self.runner.run(batch)
        except OutOfMemory:
            self.calls.append((len(batch), True))
            raise
        self.calls.append((len(batch), False))
        return out


def test_a_batch_that_does_not_fit_is_split_until_it_does(tiny_bundle):
    cpu, gpu = runners(tiny_bundle)
    big = frames(*[65_536] * 8)  # 2047 tokens each; mha holds [B, H, T, T] scores
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    gpu.run(big[:1])
    per_frame = torch.cuda.max_memory_allocated() - base
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    # room for about two frames at a time, not four. The cap is on reserved memory: after
    # earlier tests in the process, segments that empty_cache cannot return (a live tensor in
    # each) hold more than is allocated, and a cap from allocated bytes left no room at all
    held = torch.cuda.memory_reserved()
    torch.cuda.set_per_process_memory_fraction((held + 2.5 * per_frame) / total)
    try:
        counting = CountingRunner(gpu)
        metrics = make_metrics(max_batch=8, device="cuda")
        engine = Engine(
            counting,
            metrics,
            max_batch=8,
            max_wait_s=0.0,
            max_queue=4,
            deadline_s=60.0,
            warmup_samples=256,
        )
        engine.start()
        done = threading.Event()
        outcome: list[Prediction] = []

        def settle(result):
            outcome.append(result)
            done.set()

        while not engine.ready:
            assert engine.live
            threading.Event().wait(0.01)
        counting.calls.clear()
        engine.submit(big, settle)
        assert done.wait(120)
        engine.stop()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert isinstance(outcome[0], Prediction), outcome[0]
    assert (8, True) in counting.calls and (4, True) in counting.calls
    assert sum(n for n, failed in counting.calls if not failed) == 8
    expected = np.concatenate([cpu.run([f]).probabilities for f in big])
    np.testing.assert_allclose(outcome[0].probabilities, expected, atol=1e-4)


def test_graphed_batches_give_the_eager_probabilities(tiny_bundle, caplog, full_fp32_matmuls):
    cuda = torch.device("cuda")
    bundle = load_bundle(tiny_bundle, device=cuda)
    eager = TorchRunner(bundle.model, bundle.feature_config, cuda)
    graphed = TorchRunner(
        bundle.model,
        bundle.feature_config,
        cuda,
        graph_lengths=[4096, 8192],
        graph_batch_sizes=[1, 2, 4],
    )
    with caplog.at_level(logging.INFO, logger="service.cuda_graphs"):
        lengths = ([4096] * 4, [4096] * 3, [4096], [8192] * 2)
        for batch in (frames(*n) for n in lengths):
            out, reference = graphed.run(batch), eager.run(batch)
            np.testing.assert_allclose(out.probabilities, reference.probabilities, atol=1e-5)
            np.testing.assert_array_equal(out.signal, reference.signal)
            assert out.preprocess_s > 0 and out.inference_s > 0
        mixed = frames(4096, 2000)  # no graph: the eager path, padded and masked
        np.testing.assert_allclose(
            graphed.run(mixed).probabilities, eager.run(mixed).probabilities, atol=1e-5
        )
    # buckets 4 and 1 of 4,096 samples and 2 of 8,192
    assert caplog.text.count("CUDA graph for batches of") == 3
    assert "no CUDA graph" not in caplog.text
