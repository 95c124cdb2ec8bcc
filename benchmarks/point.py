"""One point of the backend sweep, run inside its own process (benchmarks.isolation): a model of
one size, backend and norm at one sequence length, timed for single-request latency, throughput
at the largest batch that fits, K/V and peak memory, and on a GPU the attention's TFLOP/s."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from benchmarks.isolation import OUT_OF_MEMORY, TIME_LIMIT, is_out_of_memory
from benchmarks.memory import peak_growth_bytes
from benchmarks.models import FEATURES, bench_config, bench_dtype, samples_for_tokens
from benchmarks.timing import summarize_ms, time_calls, time_once
from preprocessing.spectra import n_frames
from rfmodel.classifier import RFClassifier
from rfmodel.config import NORMS
from rfmodel.cuda_graph import cuda_graph
from rfmodel.iq_logits import EAGER, Stages, iq_logits

MB = 2**20
SOFTMAX_BACKENDS = ("mha", "flash", "gqa")  # full T x T softmax: 4*B*H*T^2*d FLOPs per layer


@dataclass(frozen=True)
class PointSpec:
    size: str
    backend: str
    norm: str
    tokens: int
    device: str
    max_batch: int
    call_limit_s: float  # one forward longer than this ends the point (batch 1) or the batch search
    latency_repeats: int  # most timed single requests
    min_repeats: int
    timing_budget_s: float  # timed calls continue past min_repeats while their sum is below this
    latency_budget_ms: float
    threads: int = 1
    seed: int = 0
    compile: bool = False  # also time the throughput batch through torch.compile


def build_model(size: str, backend: str, norm: str, device: torch.device) -> RFClassifier:
    model = RFClassifier(bench_config(size, backend, norm))
    return model.to(device=device, dtype=bench_dtype(size, device)).eval()


def request_fn(
    model: RFClassifier, tokens: int, device: torch.device, stages: Stages = EAGER
) -> Callable[[], object]:
    """One request of one recording as the service's runner computes it: features from IQ
    already on the device, then the model."""
    iq = torch.randn(1, samples_for_tokens(tokens), dtype=torch.complex64, device=device)
    return lambda: iq_logits(model, iq, FEATURES, stages=stages)


def measure_point(spec: PointSpec) -> dict:
    device = torch.device(spec.device)
    torch.set_num_threads(spec.threads)
    torch.manual_seed(spec.seed)
    with torch.inference_mode():
        model = build_model(spec.size, spec.backend, spec.norm, device)
        request = request_fn(model, spec.tokens, device)
        first_s = time_once(request, device)
        if first_s > spec.call_limit_s:
            # the first call pays one-off costs (allocations, kernel autotuning): a warm one
            # decides whether requests of this length are over the limit
            first_s = time_once(request, device)
        if first_s > spec.call_limit_s:
            return {
                "status": TIME_LIMIT,
                "detail": f"one request took {first_s:.2f} s, over the {spec.call_limit_s:g} s "
                "limit per call",
            }
        cpu_start = time.process_time()
        seconds = time_calls(
            request, device, spec.latency_repeats, spec.min_repeats, spec.timing_budget_s, warmups=0
        )
        latency = summarize_ms(seconds)
        result = {
            "latency": latency,
            # beside wall time because other work on a shared machine stretches wall time only
            "latency_cpu_ms_mean": 1e3 * (time.process_time() - cpu_start) / len(seconds),
            "within_budget": latency["p99_ms"] <= spec.latency_budget_ms,
            "kv_mb_per_recording": model.kv_memory_bytes(1, spec.tokens) / MB,
            **measure_throughput(model, spec, device),
        }
        if device.type == "cuda":
            result["latency_cuda_graph"] = graphed_latency(request, spec, device)
        if device.type == "cuda" and spec.compile:
            compiled = request_fn(model, spec.tokens, device, Stages.compiled())
            result["latency_compiled_graph"] = graphed_latency(compiled, spec, device)
        if spec.compile and result["batch"] is not None:
            result |= compiled_throughput(model, spec, result["batch"], device)
        if device.type == "cuda" and spec.backend in SOFTMAX_BACKENDS and result["batch"]:
            # the batch search leaves cached blocks that can be too fragmented for T x T scores
            torch.cuda.empty_cache()
            result["attention_tflops"] = attention_tflops(model, spec, result["batch"], device)
    return result


def graphed_latency(request: Callable[[], object], spec: PointSpec, device: torch.device) -> dict:
    """p50/p99 of the same single request replayed from a CUDA graph, or why it could not be
    captured (or, through torch.compile, compiled)."""
    try:
        replay = cuda_graph(request, device)
    except Exception as exc:  # inductor raises its own errors, not only RuntimeError
        return {"status": "not captured", "detail": str(exc).splitlines()[0][:300]}
    seconds = time_calls(
        replay, device, spec.latency_repeats, spec.min_repeats, spec.timing_budget_s
    )
    return {"status": "ok", **summarize_ms(seconds)}


def compiled_throughput(
    model: RFClassifier, spec: PointSpec, batch: int, device: torch.device
) -> dict:
    """Recordings/s with the model through torch.compile (kernels fused, fixed shapes), compile
    time beside it, or the error that stopped it. At the eager throughput batch, halved while the
    compiled forward does not fit there: it can need twice eager's memory (flash at 4k tokens,
    batch 1024, on an H100: 36 GiB against 18.7 GB), and at the edge of the GPU's memory the
    caching allocator frees its cache and allocates again inside the timed calls (flash at batch
    2048: 2,462 recordings/s against 2,748 at 1024; docs/benchmarks/README.md, session 18)."""
    compiled = torch.compile(model, dynamic=False)
    halved_because: list[str] = []
    while True:
        run = timed_compiled_run(compiled, spec, batch, device)
        if run["status"] != DOES_NOT_FIT or batch == 1:
            break
        halved_because.append(f"{run['detail']} at batch {batch}")
        batch //= 2
    if halved_because:
        run |= {"batch": batch, "halved_because": halved_because}
    return {"compiled": run}


DOES_NOT_FIT = "does not fit"


def timed_compiled_run(
    compiled: torch.nn.Module, spec: PointSpec, batch: int, device: torch.device
) -> dict:
    dtype = compiled.embed.weight.dtype
    try:
        forward = random_batch(compiled, batch, spec.tokens, device, dtype)
        compile_s = time_once(forward, device)
        retries = allocator_retries(device)
        seconds = time_calls(
            forward, device, spec.latency_repeats, spec.min_repeats, spec.timing_budget_s
        )
        if allocator_retries(device) > retries:
            raise torch.OutOfMemoryError("the caching allocator ran out and retried when timed")
    except Exception as exc:  # an inductor or memory failure is a row, not a lost sweep point
        if is_out_of_memory(exc):  # "CUDA out of memory. Tried to allocate ...": its first sentence
            status, detail = DOES_NOT_FIT, str(exc).split(".")[0]
        else:
            status, detail = "failed", str(exc).splitlines()[0][:300]
    else:
        median_s = summarize_ms(seconds)["p50_ms"] / 1e3
        run = {
            "status": "ok",
            "throughput_per_s": batch / median_s,
            "repeats": len(seconds),
            "compile_s": round(compile_s, 1),
        }
        if device.type == "cuda":
            run["graphed"] = graphed_throughput(forward, spec, batch, device)
        return run
    # outside the except block, so the failed attempt's tensors are gone before the next one
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"status": status, "detail": detail}


def allocator_retries(device: torch.device) -> int:
    """How often the CUDA caching allocator has freed its cached blocks to retry an allocation
    (each a device synchronisation and cudaFree/cudaMalloc)."""
    if device.type != "cuda":
        return 0
    return torch.cuda.memory_stats(device).get("num_alloc_retries", 0)


def graphed_throughput(
    forward: Callable[[], object], spec: PointSpec, batch: int, device: torch.device
) -> dict:
    """Recordings/s of the same forward replayed from a CUDA graph, or why it could not be
    captured. A launched kernel sequence leaves the GPU idle between kernels: 0.84 ms of a
    26.5 ms compiled forward of latent at the reference size (docs/experiments/gpu_roofline)."""
    torch.cuda.empty_cache()  # the graph's own memory pool comes on top of the forward's
    timed = graphed_latency(forward, spec, device)
    if timed["status"] != "ok":
        return timed
    seconds_per_call = timed["p50_ms"] / 1e3
    return {
        "status": "ok",
        "throughput_per_s": batch / seconds_per_call,
        "repeats": timed["repeats"],
    }


def measure_throughput(model: RFClassifier, spec: PointSpec, device: torch.device) -> dict:
    """Recordings/s of the forward pass (features precomputed) at the largest power-of-two batch
    up to max_batch whose forward fits in memory and in the per-call time limit."""
    dtype = model.embed.weight.dtype
    batches: list[dict] = []
    best: tuple[int, float] | None = None
    limited_by = f"max batch {spec.max_batch}"
    batch = 1
    while batch <= spec.max_batch:
        # try_batch keeps no tensor alive past its call: a batch fits or not on its own, not
        # beside the last one's input (which would take the doubling's memory at every step)
        outcome = try_batch(model, batch, spec.tokens, device, dtype)
        batches.append(outcome)
        if outcome["status"] == OUT_OF_MEMORY:
            limited_by = f"out of memory at batch {batch}"
            break
        if outcome["first_call_s"] > spec.call_limit_s:
            # a first call may pay one-off costs (Triton's autotuning at a new shape took 8 s on
            # an H100 where the warm call took under 1): a warm one decides, as in measure_point
            forward = random_batch(model, batch, spec.tokens, device, dtype)
            outcome["warm_call_s"] = time_once(forward, device)
            del forward
        if outcome.get("warm_call_s", outcome["first_call_s"]) > spec.call_limit_s:
            outcome["status"] = TIME_LIMIT
            limited_by = f"time limit at batch {batch}"
            break
        best = (batch, outcome["peak_mb"])
        batch *= 2
    if best is None:
        return {"batch": None, "batch_limited_by": limited_by, "batches": batches}
    batch, peak_mb = best
    forward = random_batch(model, batch, spec.tokens, device, dtype)
    seconds = time_calls(
        forward, device, spec.latency_repeats, spec.min_repeats, spec.timing_budget_s
    )
    median_s = summarize_ms(seconds)["p50_ms"] / 1e3
    return {
        "batch": batch,
        "batch_limited_by": limited_by,
        "throughput_per_s": batch / median_s,
        "throughput_repeats": len(seconds),
        "kv_mb": model.kv_memory_bytes(batch, spec.tokens) / MB,
        "peak_mb": peak_mb,
        "batches": batches,
    }


def random_batch(
    model: Callable[..., object],
    batch: int,
    tokens: int,
    device: torch.device,
    dtype: torch.dtype,
) -> Callable[[], object]:
    """The model's forward on a random batch of features (and of recording features when the
    benchmarked config has a recording head); timing does not depend on the values."""
    x = torch.randn(batch, tokens, FEATURES.n_features, device=device, dtype=dtype)
    recording = None
    if FEATURES.recording_views:
        width = FEATURES.recording_views * FEATURES.n_features
        recording = torch.randn(batch, width, device=device, dtype=dtype)
    return lambda: model(x, recording=recording)


def try_batch(
    model: RFClassifier, batch: int, tokens: int, device: torch.device, dtype: torch.dtype
) -> dict:
    """One forward of a random feature batch (timing does not depend on the values): its time
    and peak memory growth, or the out-of-memory status. The batch is freed on return."""
    elapsed: list[float] = []
    try:
        forward = random_batch(model, batch, tokens, device, dtype)
        peak = peak_growth_bytes(lambda: elapsed.append(time_once(forward, device)), device)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        message = str(exc).splitlines()[0][:300]
    else:
        return {"batch": batch, "status": "ok", "first_call_s": elapsed[0], "peak_mb": peak / MB}
    # outside the except block, so the failed attempt's tensors are gone before the next one
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"batch": batch, "status": OUT_OF_MEMORY, "detail": message}


def attention_tflops(
    model: RFClassifier, spec: PointSpec, batch: int, device: torch.device
) -> float | None:
    """Achieved TFLOP/s of the first layer's attention core (scores and weighted sum, RoPE
    included), counted as 4*B*H*T^2*d for the full softmax backends; None where it runs out of
    memory at the throughput batch (mha at 4k tokens did on an H200, a 64 GiB allocation, before
    the cache was emptied first)."""
    block = model.blocks[0]
    dtype = model.embed.weight.dtype
    try:
        x = torch.randn(batch, spec.tokens, model.cfg.n_features, device=device, dtype=dtype)
        q, k, v = block.attn.project(block.attn_norm(model.embed(x)))
        rope = model.rope(spec.tokens, device, dtype)
        seconds = time_calls(
            lambda: block.attn.attn(q, k, v, None, rope),
            device,
            spec.latency_repeats,
            spec.min_repeats,
            spec.timing_budget_s,
        )
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        return None
    flops = 4 * batch * model.cfg.n_heads * spec.tokens**2 * model.cfg.head_dim
    return flops / (summarize_ms(seconds)["p50_ms"] / 1e3) / 1e12


@dataclass(frozen=True)
class MatmulSpec:
    device: str
    n: int = 8192
    repeats: int = 20


def measure_matmul_peak(spec: MatmulSpec) -> dict:
    """bf16 n x n matmul TFLOP/s: the yardstick for the attention TFLOP/s (GPU only)."""
    device = torch.device(spec.device)
    a = torch.randn(spec.n, spec.n, device=device, dtype=torch.bfloat16)
    b = torch.randn(spec.n, spec.n, device=device, dtype=torch.bfloat16)
    seconds = time_calls(lambda: a @ b, device, spec.repeats, spec.repeats, 0.0, warmups=3)
    median_s = summarize_ms(seconds)["p50_ms"] / 1e3
    return {"n": spec.n, "tflops": 2 * spec.n**3 / median_s / 1e12, "repeats": len(seconds)}


@dataclass(frozen=True)
class BudgetSpec:
    backend: str
    device: str
    latency_budget_ms: float
    default_samples: int
    max_tokens: int
    repeats: int
    refine_steps: int = (
        3  # bisection steps between the last length within budget and the first over
    )
    threads: int = 1


def measure_budget(spec: BudgetSpec) -> dict:
    """Default model: p99 of one request at the default input length, and the longest input (in
    tokens) whose p99 stays within the budget, found by doubling then bisecting."""
    device = torch.device(spec.device)
    torch.set_num_threads(spec.threads)
    torch.manual_seed(0)
    tried: dict[int, dict] = {}

    def p99_ms(tokens: int) -> float:
        seconds = time_calls(
            request_fn(model, tokens, device), device, spec.repeats, spec.repeats, 0.0, warmups=2
        )
        tried[tokens] = summarize_ms(seconds)
        return tried[tokens]["p99_ms"]

    with torch.inference_mode():
        model = build_model("default", spec.backend, "rmsnorm", device)
        default_tokens = n_frames(spec.default_samples, FEATURES.nfft, FEATURES.hop)
        within, over = None, None
        tokens = default_tokens
        while tokens <= spec.max_tokens:
            if p99_ms(tokens) > spec.latency_budget_ms:
                over = tokens
                break
            within, tokens = tokens, tokens * 2
        for _ in range(spec.refine_steps if within is not None and over is not None else 0):
            middle = (within + over) // 2
            if middle in (within, over):
                break
            if p99_ms(middle) <= spec.latency_budget_ms:
                within = middle
            else:
                over = middle
    return {
        "default_tokens": default_tokens,
        "default_samples": spec.default_samples,
        "default_latency": tried[default_tokens],
        "longest_tokens_within_budget": within,
        "longest_samples_within_budget": None if within is None else samples_for_tokens(within),
        "search_capped": over is None,  # still within budget at max_tokens
        "tried": {str(t): tried[t] for t in sorted(tried)},
    }


@dataclass(frozen=True)
class NormPairSpec:
    size: str
    backend: str
    tokens: int
    device: str
    max_repeats: int
    min_repeats: int
    timing_budget_s: float
    call_limit_s: float
    threads: int = 1


def measure_norm_pair(spec: NormPairSpec) -> dict:
    """p50 of one request with RMSNorm and with LayerNorm, the calls alternating between the two
    models, so load that drifts during the run weighs on both alike, and each pair in the other
    order than the last, so neither always runs first."""
    device = torch.device(spec.device)
    torch.set_num_threads(spec.threads)
    torch.manual_seed(0)
    with torch.inference_mode():
        requests = {
            norm: request_fn(
                build_model(spec.size, spec.backend, norm, device), spec.tokens, device
            )
            for norm in NORMS
        }
        first_s = {norm: time_once(fn, device) for norm, fn in requests.items()}  # warm-up
        slowest = max(first_s.values())
        if slowest > spec.call_limit_s:
            return {
                "status": TIME_LIMIT,
                "detail": f"one request took {slowest:.2f} s, over the {spec.call_limit_s:g} s "
                "limit per call",
            }
        # sized by a warm pair: the first calls' one-off costs left few pairs to take medians
        # of (5 in the GPU reports, where a warm call takes 10-16 ms of the 1.5 s budget)
        warm_pair_s = sum(time_once(fn, device) for fn in requests.values())
        pairs = int(spec.timing_budget_s / warm_pair_s)
        pairs = min(spec.max_repeats, max(spec.min_repeats, pairs))
        seconds: dict[str, list[float]] = {norm: [] for norm in requests}
        order = list(requests.items())
        for i in range(pairs):
            for norm, fn in order if i % 2 == 0 else order[::-1]:
                seconds[norm].append(time_once(fn, device))
    p50 = {norm: summarize_ms(s)["p50_ms"] for norm, s in seconds.items()}
    return {
        "p50_ms": p50,
        "pairs": pairs,
        "layernorm_over_rmsnorm": p50["layernorm"] / p50["rmsnorm"],
    }
