"""Experiment: which SDPA kernel is fastest for the benchmarks' reference size (8 heads of 32,
bf16, 4k tokens), and the flash model's throughput under each, eager and through torch.compile
(default and max-autotune); then latent's. Needs CUDA; results and reading in README.md.

    python docs/experiments/sdpa_kernels/probe.py
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks.point import build_model, random_batch
from benchmarks.timing import summarize_ms, time_calls

B, H, T, D = 64, 8, 4096, 32
KERNELS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
}
MODELS = {"flash": (256, tuple(KERNELS)), "latent": (1024, ("flash",))}  # batch, kernels
# torch.compile modes (None: eager) and the kernels tried under each
MODES = {
    None: tuple(KERNELS),
    "default": ("flash", "cudnn"),
    "max-autotune-no-cudagraphs": ("flash",),
}


def median_ms(fn, device: torch.device, repeats: int) -> float:
    return summarize_ms(time_calls(fn, device, repeats, repeats, 30.0))["p50_ms"]


def report(what: str, measure, *args) -> None:
    """Print what measure(*args) returns, or the first line of why it failed."""
    try:
        print(f"{what}: {measure(*args)}", flush=True)
    except Exception as exc:  # a kernel that refuses these shapes is a row, not the end
        print(f"{what}: failed {str(exc).splitlines()[0][:200]}", flush=True)


def kernel_alone(kernel: SDPBackend, device: torch.device) -> str:
    q, k, v = (torch.randn(B, H, T, D, device=device, dtype=torch.bfloat16) for _ in range(3))
    with sdpa_kernel([kernel]):
        ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v), device, 30)
    return f"{ms:.3f} ms {4 * B * H * T * T * D / ms / 1e9:.0f} TFLOP/s"


def model_rate(model, batch: int, kernel: SDPBackend, device: torch.device, mode: str | None):
    started = time.perf_counter()
    with sdpa_kernel([kernel]):
        if mode is not None:
            torch._dynamo.reset()
            model = torch.compile(model, dynamic=False, mode=mode)
        forward = random_batch(model, batch, T, device, torch.bfloat16)
        forward()
        torch.cuda.synchronize()
        setup_s = time.perf_counter() - started
        ms = median_ms(forward, device, 10)
    return f"{batch / ms * 1e3:,.0f} rec/s (first call {setup_s:.0f} s)"


def main() -> None:
    device = torch.device("cuda")
    print(torch.__version__, torch.cuda.get_device_name(), torch.backends.cudnn.version())
    for name, kernel in KERNELS.items():
        report(f"sdpa {name}", kernel_alone, kernel, device)
    with torch.no_grad():
        for backend, (batch, kernels) in MODELS.items():
            model = build_model("reference", backend, "rmsnorm", device)
            for mode, tried in MODES.items():
                for name in (n for n in kernels if n in tried):
                    report(
                        f"{backend} {mode or 'eager'} sdpa={name} batch {batch}",
                        model_rate,
                        model,
                        batch,
                        KERNELS[name],
                        device,
                        mode,
                    )


if __name__ == "__main__":
    main()
