"""The measuring parts of the benchmarks: peak memory growth, isolated points and their
statuses, and the CUDA paths (skipped without a GPU)."""

from __future__ import annotations

import weakref
from dataclasses import replace

import pytest
import torch

from benchmarks import environment, point
from benchmarks.isolation import FAILED, OUT_OF_MEMORY, TIME_LIMIT, run_isolated
from benchmarks.memory import peak_growth_bytes
from benchmarks.point import (
    MatmulSpec,
    PointSpec,
    build_model,
    measure_matmul_peak,
    measure_point,
    request_fn,
)
from rfmodel.cuda_graph import cuda_graph
from rfmodel.iq_logits import EAGER, Stages

MB = 2**20


def tiny_point(device: str = "cpu", backend: str = "latent", **changes) -> PointSpec:
    fields = {
        "size": "default",
        "backend": backend,
        "norm": "rmsnorm",
        "tokens": 16,
        "device": device,
        "max_batch": 4,
        "call_limit_s": 5.0,
        "latency_repeats": 4,
        "min_repeats": 3,
        "timing_budget_s": 0.1,
        "latency_budget_ms": 30.0,
    }
    return PointSpec(**{**fields, **changes})


@pytest.mark.parametrize(
    ("installed", "expected"),
    [({}, None), ({"pytorch-triton": "3.6.0"}, "3.6.0"), ({"triton": "3.8.0"}, "3.8.0")],
)
def test_versions_name_triton_under_either_distribution_name(monkeypatch, installed, expected):
    def version(name):
        if name not in installed:
            raise environment.metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(environment.metadata, "version", version)
    found = environment.versions(extra="x")
    assert found.get("triton") == expected
    assert found["torch"] == torch.__version__ and found["extra"] == "x"


def test_peak_growth_sees_a_temporary_allocation():
    def allocate() -> None:
        block = torch.ones(64 * MB // 4)  # 64 MB, touched, freed on return
        assert block.sum() > 0

    assert peak_growth_bytes(allocate, torch.device("cpu")) >= 48 * MB
    assert peak_growth_bytes(lambda: None, torch.device("cpu")) < 16 * MB


def test_isolated_point_reports_every_measurement():
    row = run_isolated(measure_point, tiny_point(), time_limit_s=60)
    assert row["status"] == "ok", row
    assert row["batch"] == 4 and row["batch_limited_by"] == "max batch 4"
    assert [b["batch"] for b in row["batches"]] == [1, 2, 4]
    assert row["peak_mb"] > 0 and row["throughput_per_s"] > 0
    assert row["latency"]["repeats"] >= 3 and row["latency_cpu_ms_mean"] > 0


def test_isolated_point_statuses():
    assert run_isolated(measure_point, tiny_point(), time_limit_s=0.01)["status"] == TIME_LIMIT
    starved = run_isolated(measure_point, tiny_point(), time_limit_s=60, memory_limit_mb=1)
    assert starved["status"] == OUT_OF_MEMORY
    failed = run_isolated(measure_point, tiny_point(backend="nope"), time_limit_s=60)
    assert failed["status"] == FAILED and "attn_backend" in failed["detail"]


def test_slow_single_request_is_a_time_limit_row():
    row = run_isolated(measure_point, tiny_point(call_limit_s=1e-6), time_limit_s=60)
    assert row["status"] == TIME_LIMIT and "over the 1e-06 s limit per call" in row["detail"]


def test_compiled_throughput_halves_the_batch_while_the_allocator_retries(monkeypatch):
    """Allocator retries during the timed calls (a CUDA-only counter, faked here) mean the
    compiled forward does not fit at that batch: it is timed again at half the batch."""
    spec = tiny_point()
    counts = iter([0, 1, 1, 2, 2, 2])  # before and after each run's timed calls
    monkeypatch.setattr(point, "allocator_retries", lambda device: next(counts))
    monkeypatch.setattr(torch, "compile", lambda model, **options: model)  # eager stands in
    batches = []
    real_random_batch = point.random_batch
    monkeypatch.setattr(
        point,
        "random_batch",
        lambda model, batch, *rest: batches.append(batch) or real_random_batch(model, batch, *rest),
    )
    model = build_model(spec.size, spec.backend, spec.norm, torch.device("cpu"))
    with torch.inference_mode():
        run = point.compiled_throughput(model, spec, 8, torch.device("cpu"))["compiled"]
    assert batches == [8, 4, 2]
    assert run["status"] == "ok" and run["batch"] == 2 and run["throughput_per_s"] > 0
    assert run["halved_because"] == [
        f"the caching allocator ran out and retried when timed at batch {b}" for b in (8, 4)
    ]


def test_compiled_throughput_halves_the_batch_that_runs_out_of_memory(monkeypatch):
    spec = tiny_point()
    monkeypatch.setattr(torch, "compile", lambda model, **options: model)
    real_random_batch = point.random_batch

    def random_batch(model, batch, *rest):
        if batch > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 16.00 GiB. GPU 0")
        return real_random_batch(model, batch, *rest)

    monkeypatch.setattr(point, "random_batch", random_batch)
    model = build_model(spec.size, spec.backend, spec.norm, torch.device("cpu"))
    with torch.inference_mode():
        run = point.compiled_throughput(model, spec, 8, torch.device("cpu"))["compiled"]
    assert run["status"] == "ok" and run["batch"] == 2
    assert run["halved_because"] == [
        "CUDA out of memory at batch 8",
        "CUDA out of memory at batch 4",
    ]


def test_compiled_throughput_keeps_the_batch_it_fits(monkeypatch):
    spec = tiny_point()
    monkeypatch.setattr(torch, "compile", lambda model, **options: model)
    model = build_model(spec.size, spec.backend, spec.norm, torch.device("cpu"))
    with torch.inference_mode():
        run = point.compiled_throughput(model, spec, 2, torch.device("cpu"))["compiled"]
    assert run["status"] == "ok" and "batch" not in run and "halved_because" not in run


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_point_measures_device_memory_and_attention_tflops():
    row = run_isolated(measure_point, tiny_point("cuda", backend="flash"), time_limit_s=120)
    assert row["status"] == "ok", row
    assert row["peak_mb"] > 0 and row["attention_tflops"] > 0
    assert row["latency_cuda_graph"]["status"] == "ok", row["latency_cuda_graph"]
    reference = run_isolated(
        measure_point,
        tiny_point("cuda", backend="flash", size="reference", compile=True),
        time_limit_s=300,
    )
    assert reference["status"] == "ok", reference
    assert reference["compiled"]["status"] == "ok", reference["compiled"]
    assert reference["compiled"]["graphed"]["status"] == "ok", reference["compiled"]
    assert reference["latency_compiled_graph"]["status"] == "ok", reference


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matmul_peak():
    peak = measure_matmul_peak(MatmulSpec("cuda", n=1024, repeats=3))
    assert peak["tflops"] > 0 and peak["repeats"] == 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["flash", "latent"])
@pytest.mark.parametrize("stages", ["eager", "compiled"])
def test_cuda_graph_replay_computes_what_the_eager_request_does(backend: str, stages: str):
    device = torch.device("cuda")
    with torch.inference_mode():
        model = build_model("reference", backend, "rmsnorm", device)
        chosen = Stages.compiled() if stages == "compiled" else EAGER
        torch.manual_seed(0)  # the same IQ for the eager request below
        request = request_fn(model, 64, device, chosen)
        replay = cuda_graph(request, device)
        torch.manual_seed(0)
        eager = request_fn(model, 64, device)().float()
        replay().zero_()  # a replay must overwrite it, not hand back what the capture left
        replayed = replay().float()
    torch.testing.assert_close(replayed, eager, rtol=0.02, atol=0.02)
    assert eager.abs().max() > 0


def test_the_batch_search_tries_each_batch_with_the_last_one_freed(monkeypatch):
    """Each doubling must fit on its own: with the previous batch's input still held, a batch
    that fits would be refused as out of memory (and the throughput measured at half of it)."""
    alive: list[weakref.ref] = []
    real_random_batch = point.random_batch

    def random_batch(*args):
        assert all(ref() is None for ref in alive), "an earlier batch's input is still held"
        forward = real_random_batch(*args)
        cells = (cell.cell_contents for cell in forward.__closure__)
        alive.extend(weakref.ref(t) for t in cells if isinstance(t, torch.Tensor))
        return forward

    monkeypatch.setattr(point, "random_batch", random_batch)
    spec = tiny_point(max_batch=8)
    model = build_model(spec.size, spec.backend, spec.norm, torch.device("cpu"))
    with torch.inference_mode():
        result = point.measure_throughput(model, spec, torch.device("cpu"))
    assert result["batch"] == 8 and [b["batch"] for b in result["batches"]] == [1, 2, 4, 8]
    assert len(alive) >= 5  # the four tries and the timed batch


def test_the_batch_search_stops_on_a_slow_warm_call_not_a_slow_first_one(monkeypatch):
    """Batch 4's first call pays a one-off cost past the limit (autotuning at a new shape): its
    warm call decides. Batch 8's warm calls are over the limit too: the search stops there."""
    calls: dict[int, int] = {}

    def random_batch(model, batch, tokens, device, dtype):
        forward = lambda: None  # noqa: E731
        forward.batch = batch
        return forward

    def time_once(forward, device):
        batch = forward.batch
        calls[batch] = calls.get(batch, 0) + 1
        return 1.0 if batch == 4 and calls[batch] == 1 else 0.02 * batch

    monkeypatch.setattr(point, "random_batch", random_batch)
    monkeypatch.setattr(point, "time_once", time_once)
    monkeypatch.setattr(point, "peak_growth_bytes", lambda fn, device: fn() or 0)
    monkeypatch.setattr(point, "time_calls", lambda forward, device, *limits: [0.08] * 5)
    spec = replace(tiny_point(max_batch=16), call_limit_s=0.1)
    model = build_model(spec.size, spec.backend, spec.norm, torch.device("cpu"))
    result = point.measure_throughput(model, spec, torch.device("cpu"))
    assert result["batch"] == 4 and result["batch_limited_by"] == "time limit at batch 8"
    assert result["batches"][2]["warm_call_s"] == 0.08


def test_norm_pairs_are_sized_by_warm_calls_and_alternate_their_order(monkeypatch):
    """The first call of each model takes 100x a warm one (first allocations, autotuning): the
    pairs that fit the budget are counted from warm calls, and each pair runs in the other order
    than the last."""
    calls: list[str] = []

    def time_once(fn, device):
        calls.append(fn.norm)
        return 1.0 if calls.count(fn.norm) == 1 else 0.01

    def request_fn(model, tokens, device):
        fn = lambda: None  # noqa: E731
        fn.norm = model.cfg.norm
        return fn

    monkeypatch.setattr(point, "time_once", time_once)
    monkeypatch.setattr(point, "request_fn", request_fn)
    spec = point.NormPairSpec(
        size="default", backend="mha", tokens=16, device="cpu", max_repeats=100,
        min_repeats=3, timing_budget_s=0.2, call_limit_s=5.0,
    )  # fmt: skip
    result = point.measure_norm_pair(spec)
    assert result["pairs"] == 10  # 0.2 s over warm pairs of 0.02 s, not over the cold 2 s
    timed = calls[4:]  # after the cold pair and the warm sizing pair
    assert timed[:4] == ["rmsnorm", "layernorm", "layernorm", "rmsnorm"]


def test_a_slow_first_call_alone_is_no_time_limit(monkeypatch):
    """One-off costs of the first request (here 10x the limit) do not end the point: a warm
    second request decides."""
    times = iter([10.0])
    real_time_once = point.time_once
    monkeypatch.setattr(
        point, "time_once", lambda fn, device: next(times, None) or real_time_once(fn, device)
    )
    row = point.measure_point(tiny_point(call_limit_s=1.0))
    assert "status" not in row or row["status"] == "ok"
    assert row["latency"]["p50_ms"] < 1e3
