"""Serving in bfloat16 on a CPU with native bf16 matmuls: held-out accuracy and time per frame.

For each shipped model (mha serves flash's weights too): the held-out evaluation set (the
`rfcls evaluate` default: seed, 400 recordings per class, 4,096 samples) predicted by the model
in float32 and with its weights cast to bfloat16, as RFCLS_PRECISION=bfloat16 serves it (the
features stay float32 and are cast before the model); then the model alone on one 32,768-sample
frame (255 tokens), one torch thread, in each dtype.

    python docs/experiments/cpu_bfloat16/probe.py            # about 4 minutes on 2 vCPUs
"""

from __future__ import annotations

import time

import numpy as np
import torch

from preprocessing.features import compute_features
from rfmodel.bundle import load_bundle, shipped_model_dir
from rfmodel.data import make_eval_set
from rfmodel.evaluate import EVAL_SAMPLES, EVAL_SEED, predict, score

MODELS = [("mha", "rmsnorm"), ("gqa", "rmsnorm"), ("latent", "rmsnorm"), ("mla", "rmsnorm")]
MODELS += [("latte", "rmsnorm"), ("mha", "layernorm")]
DTYPES = (torch.float32, torch.bfloat16)
FRAME_SAMPLES = 32_768
TIMED_CALLS = 50


def model_ms(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Median wall time of the transformer on features x, after 5 untimed calls."""
    times = []
    for i in range(5 + TIMED_CALLS):
        start = time.perf_counter()
        model.sequence_logits(x)
        if i >= 5:
            times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


@torch.inference_mode()
def main() -> None:
    cpu = torch.device("cpu")
    print(
        f"torch {torch.__version__}, native bf16: avx512_bf16 "
        f"{torch.cpu._is_avx512_bf16_supported()}, amx {torch.cpu._is_amx_tile_supported()}"
    )
    iq, labels, snr = make_eval_set(EVAL_SEED, 400, EVAL_SAMPLES)
    frame = torch.randn(1, FRAME_SAMPLES, dtype=torch.complex64, generator=torch.manual_seed(0))
    print(
        "model             dtype     overall  >=10 dB  0 dB   same answer as float32  "
        "model ms/frame (1 thread)"
    )
    for backend, norm in MODELS:
        answers = {}
        for dtype in DTYPES:
            bundle = load_bundle(shipped_model_dir(backend, norm), device=cpu)
            model = bundle.model.to(dtype).eval()
            torch.set_num_threads(torch.get_num_interop_threads())
            answers[dtype] = predict(model, bundle.feature_config, iq, cpu)
            summary = score(labels, snr, answers[dtype], bundle.classes)["summary"]
            torch.set_num_threads(1)
            x = compute_features(frame, bundle.feature_config).to(dtype)
            same = float((answers[dtype] == answers[torch.float32]).mean())
            print(
                f"{backend + '-' + norm:<17} {str(dtype)[6:]:<9} "
                f"{summary['accuracy_overall']:.4f}   "
                f"{summary['accuracy_snr_ge_10db']:.4f}   {summary['accuracy_snr_0db']:.4f} "
                f"{same:.4f}                  {model_ms(model, x):.2f}"
            )


if __name__ == "__main__":
    main()
