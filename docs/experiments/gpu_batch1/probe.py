"""Experiment: where one request's time goes on a GPU at 4k tokens (reference size, bf16), each
part replayed from a CUDA graph: the frame features, the recording's features, the model, and
the whole request with the two feature passes one after the other or the recording's on a second
stream (as rfmodel.iq_logits runs them now); then the CUDA kernels of one eager frame-feature
pass (torch.profiler).

    python docs/experiments/gpu_batch1/probe.py [BACKENDS]   # default flash,gqa,latent

Needs a CUDA device; about a minute.
"""

from __future__ import annotations

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.models import FEATURES, samples_for_tokens
from benchmarks.point import build_model, cuda_graph
from benchmarks.timing import summarize_ms, time_calls
from preprocessing.features import compute_features
from preprocessing.recording import recording_features
from rfmodel.iq_logits import iq_logits

TOKENS = 4096
DEVICE = torch.device("cuda")


def graph_p50_ms(fn) -> float:
    return summarize_ms(time_calls(cuda_graph(fn, DEVICE), DEVICE, 200, 50, 2.0))["p50_ms"]


@torch.inference_mode()
def breakdown(backend: str, iq: torch.Tensor) -> dict[str, float]:
    model = build_model("reference", backend, "rmsnorm", DEVICE)
    dtype = model.embed.weight.dtype
    x, recording = compute_features(iq, FEATURES).to(dtype), recording_features(iq, FEATURES)

    def one_after_the_other():
        frames = compute_features(iq, FEATURES).to(dtype)
        return model(frames, recording=recording_features(iq, FEATURES))

    return {
        "frame features": graph_p50_ms(lambda: compute_features(iq, FEATURES)),
        "recording features": graph_p50_ms(lambda: recording_features(iq, FEATURES)),
        "model": graph_p50_ms(lambda: model(x, recording=recording)),
        "request, one after the other": graph_p50_ms(one_after_the_other),
        "request, second stream": graph_p50_ms(lambda: iq_logits(model, iq, FEATURES)),
    }


@torch.inference_mode()
def frame_feature_kernels(iq: torch.Tensor) -> None:
    for _ in range(3):
        compute_features(iq, FEATURES)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            compute_features(iq, FEATURES)
        torch.cuda.synchronize()
    events = prof.key_averages()
    print(events.table(sort_by="cuda_time_total", row_limit=15))
    kernels = sum(e.count for e in events if e.device_type.name == "CUDA") / 10
    print(f"CUDA kernels and copies per frame-feature pass: {kernels:.0f}")


def main() -> None:
    torch.manual_seed(0)
    iq = torch.randn(1, samples_for_tokens(TOKENS), dtype=torch.complex64, device=DEVICE)
    for backend in (sys.argv[1] if len(sys.argv) > 1 else "flash,gqa,latent").split(","):
        parts = ", ".join(f"{k} {v:.3f}" for k, v in breakdown(backend, iq).items())
        print(f"{backend}, {TOKENS} tokens, CUDA-graph p50 ms: {parts}")
    frame_feature_kernels(iq)


if __name__ == "__main__":
    main()
