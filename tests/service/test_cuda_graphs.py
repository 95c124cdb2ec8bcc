"""Batches served from CUDA graphs: the bucketing, the padding rows and the fallback to eager,
checked on the CPU with a capture that calls the function instead of replaying a graph (the real
capture is tested on a GPU in test_gpu_runner.py)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from rfmodel.bundle import load_bundle
from service.cuda_graphs import GraphedBatches
from service.inference import TorchRunner

N = 1024
SIZES = [1, 2, 4]
RNG = np.random.default_rng(3)


def frames(batch: int, n: int = N) -> np.ndarray:
    shape = (batch, n)
    return (0.3 * (RNG.standard_normal(shape) + 1j * RNG.standard_normal(shape))).astype(
        np.complex64
    )


class Captures:
    """A stand-in for rfmodel.cuda_graph.cuda_graph: each 'replay' calls fn afresh on what its
    input tensor holds then, as a graph would recompute it."""

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.count = 0

    def __call__(self, fn, device):
        self.count += 1
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        return fn


@pytest.fixture(scope="module")
def runner(tiny_bundle) -> TorchRunner:
    bundle = load_bundle(tiny_bundle, device=torch.device("cpu"))
    return TorchRunner(bundle.model, bundle.feature_config, torch.device("cpu"))


def graphed(runner: TorchRunner, captures: Captures) -> GraphedBatches:
    return GraphedBatches(runner._probabilities, [N, 2 * N], SIZES, torch.device("cpu"), captures)


def test_every_batch_size_gets_its_own_rows_back_once_per_bucket(runner):
    captures = Captures()
    batches = graphed(runner, captures)
    with torch.inference_mode():
        # 4 then 3: the bucket of 4 serves a batch of 3 with the first batch's last row as padding
        for batch, n in ((4, N), (3, N), (1, N), (2, 2 * N), (2, N), (3, N), (1, 2 * N)):
            iq = frames(batch, n)
            got = batches.run(iq).numpy()
            assert got.shape == (batch, runner.model.head.out_features)
            np.testing.assert_allclose(got, runner.run(list(iq)).probabilities, atol=1e-5)
    # buckets 1, 2 and 4 of N samples and 1 and 2 of 2N, each captured once
    assert captures.count == 5


def test_batches_no_graph_serves_are_left_to_the_eager_path(runner):
    captures = Captures()
    batches = graphed(runner, captures)
    with torch.inference_mode():
        assert batches.run(frames(2, n=N + 1)) is None  # another length
        assert batches.run(frames(5)) is None  # beyond the largest bucket
    assert captures.count == 0


def test_a_failed_capture_is_logged_once_and_its_batches_run_eagerly(runner, caplog):
    captures = Captures(fail=True)
    batches = graphed(runner, captures)
    with torch.inference_mode(), caplog.at_level(logging.WARNING):
        assert batches.run(frames(2)) is None
        assert batches.run(frames(2)) is None
    assert captures.count == 1
    assert "no CUDA graph for batches of 2" in caplog.text
