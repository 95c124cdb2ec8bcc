"""Where the reference-size forward's time goes at 4k tokens on a GPU, against the card's limits.

Issue 6 asks latent for 10,000 recordings/s and flash for 3,000 at 4,096 tokens (reference size:
d_model 256, 8 heads, 4 layers, MLP 4x, bf16, forward only); torch.compile gave 6,892 and 2,411 on
an H100. Per backend this probe times the compiled forward at one batch, splits its CUDA kernel
time into matmuls, attention and the rest (Inductor's fused elementwise and norm kernels, copies),
counts the matmul and attention FLOPs (torch.utils.flop_counter) to give each part's TFLOP/s,
and measures the card's copy bandwidth and bf16 matmul peak as yardsticks. With --autotune it
also times the same forward compiled with mode="max-autotune-no-cudagraphs" (Triton matmul
templates with fused epilogues), which takes minutes to compile. --variants picks the math:
`reference` (plain torch: cuBLAS, SDPA, Inductor), `fast` (rfmodel.kernels' fast path, as the
model runs by default), `fast-separate-qkv` (that, but three projection matmuls) and
`fast-sdpa-attention` (that, but flash's and gqa's attention by SDPA, not the Triton kernel) and
`fast-separate-unpack` (that, but latent's unpack, `wo`, the residual add and the MLP's RMSNorm
as separate steps, the default until session 24; `fast-fused-unpack` before, when the fused
kernel was off by default); each is also timed eager, and compiled replayed from a CUDA graph.

    python docs/experiments/gpu_roofline/probe.py [--batch 256] [--variants ...] [--autotune]
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from contextlib import contextmanager, nullcontext
from unittest import mock

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.point import MatmulSpec, build_model, measure_matmul_peak, random_batch
from rfmodel.attention.latent import LatentAttention
from rfmodel.cuda_graph import cuda_graph
from rfmodel.kernels import flash_attention, reference_math

TOKENS = 4096
KINDS = {  # kernel-name fragments -> part; the first that matches wins
    # latent's kernels: _pack_kernel, _unpack_kernel, _unpack_wo_norm_kernel (which also does
    # `wo`'s work, counted here as attention)
    "attention": ("flash", "fmha", "attention", "sdpa", "_pack_kernel", "_unpack_"),
    "matmul": ("gemm", "xmma", "cutlass", "nvjet", "sm90", "matmul", "triton_tem"),
}


@contextmanager
def separate_qkv():
    """The fast path, but the query, key and value projections as three matmuls."""
    with mock.patch("rfmodel.attention.mha.fast_path", lambda *tensors: False):
        yield


@contextmanager
def sdpa_attention():
    """The fast path, but flash's and gqa's attention by SDPA instead of the Triton kernel."""
    with mock.patch.object(flash_attention, "handles", lambda q, v: False):
        yield


@contextmanager
def separate_unpack():
    """The fast path, but latent's unpack, `wo`, the residual add and the MLP's RMSNorm as
    separate steps instead of one kernel (rfmodel.kernels.latent_attention.unpack_wo_norm)."""
    with mock.patch.object(LatentAttention, "fuse_residual_norm", False):
        yield


VARIANTS = {
    "reference": reference_math,
    "fast": nullcontext,
    "fast-separate-qkv": separate_qkv,
    "fast-sdpa-attention": sdpa_attention,
    "fast-separate-unpack": separate_unpack,
}


def median_ms(fn, repeats: int = 10) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def copy_bandwidth_gbs(nbytes: int = 4 * 2**30) -> float:
    """A device-to-device copy reads and writes every byte."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return 2 * nbytes / (median_ms(lambda: dst.copy_(src)) / 1e3) / 1e9


def kernel_split_ms(fn, calls: int = 3, top: int = 25) -> tuple[dict[str, float], list]:
    """CUDA kernel time per call by part (KINDS), from the profiler's kernel events only, and
    the `top` kernels by time: [part, ms per call, launches per call, name]."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    parts = dict.fromkeys([*KINDS, "other"], 0.0)
    kernels = []
    for event in prof.key_averages():
        if event.device_type != DeviceType.CUDA:
            continue
        name = event.key.lower()
        kind = next((k for k, frags in KINDS.items() if any(f in name for f in frags)), "other")
        ms = event.self_device_time_total / 1e3 / calls
        parts[kind] += ms
        kernels.append([kind, round(ms, 3), event.count / calls, event.key[:160]])
    return parts, sorted(kernels, key=lambda kernel: -kernel[1])[:top]


def flops(fn) -> dict[str, float]:
    """FLOPs by part, counted on the reference math (the counter does not see Triton kernels)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    by_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    attention = sum(n for op, n in by_op.items() if "attention" in op)
    return {"matmul": sum(by_op.values()) - attention, "attention": attention}


def eager_ms(model, batch: int) -> float:
    return median_ms(random_batch(model, batch, TOKENS, torch.device("cuda"), torch.bfloat16))


@torch.inference_mode()
def probe(backend: str, variant: str, batch: int, autotune: bool) -> dict:
    device = torch.device("cuda")
    torch.manual_seed(0)
    torch._dynamo.reset()
    model = build_model("reference", backend, "rmsnorm", device)
    with reference_math():
        counted = flops(random_batch(model, batch, TOKENS, device, torch.bfloat16))
    with VARIANTS[variant]():
        row = {"backend": backend, "variant": variant, "batch": batch}
        row["eager_recordings_per_s"] = batch / (eager_ms(model, batch) / 1e3)
        try:
            row |= compiled(model, batch, counted)
        except Exception:  # keep the eager timing of a variant that fails to compile
            row["compile_error"] = traceback.format_exc()[-3000:]
        if autotune:
            row |= autotuned(model, batch)
    return row


def compiled(model, batch: int, counted: dict[str, float]) -> dict:
    forward = random_batch(
        torch.compile(model, dynamic=False), batch, TOKENS, torch.device("cuda"), torch.bfloat16
    )
    ms = median_ms(forward)
    split, kernels = kernel_split_ms(forward)
    # the same kernels without the GPU's idle time between launches
    graphed_ms = median_ms(cuda_graph(forward, torch.device("cuda")))
    return {
        "compiled_ms": ms,
        "recordings_per_s": batch / (ms / 1e3),
        "graphed_recordings_per_s": batch / (graphed_ms / 1e3),
        "kernel_ms": split,
        "kernel_total_ms": sum(split.values()),
        "top_kernels": kernels,
        "tflops": {k: counted[k] / (split[k] / 1e3) / 1e12 for k in counted if split[k] > 0},
        "gflop_per_recording": {k: v / batch / 1e9 for k, v in counted.items()},
    }


def autotuned(model, batch: int) -> dict:
    torch._dynamo.reset()
    tuned = torch.compile(model, dynamic=False, mode="max-autotune-no-cudagraphs")
    forward = random_batch(tuned, batch, TOKENS, torch.device("cuda"), torch.bfloat16)
    start = time.perf_counter()
    forward()
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - start
    tuned_ms = median_ms(forward)
    return {
        "autotune_compile_s": compile_s,
        "autotune_ms": tuned_ms,
        "autotune_recordings_per_s": batch / (tuned_ms / 1e3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--backends", default="latent,flash")
    p.add_argument("--variants", default="reference,fast", help=", ".join(VARIANTS))
    p.add_argument("--autotune", action="store_true")
    args = p.parse_args()
    print(
        json.dumps(
            {
                "gpu": torch.cuda.get_device_name(),
                "torch": torch.__version__,
                "copy_gb_per_s": copy_bandwidth_gbs(),
                "bf16_matmul_tflops": measure_matmul_peak(MatmulSpec("cuda"))["tflops"],
            }
        ),
        flush=True,
    )
    for backend in args.backends.split(","):
        for variant in args.variants.split(","):
            try:
                row = probe(backend, variant, args.batch, args.autotune)
            except Exception as exc:  # one variant failing must not hide the rest
                row = {"backend": backend, "variant": variant, "error": repr(exc)[:500]}
                row["traceback"] = traceback.format_exc()[-3000:]
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
