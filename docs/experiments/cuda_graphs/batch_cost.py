"""Experiment: what one batch of 32,768-sample frames costs the service's runner on a GPU, eager
against replayed from CUDA graphs, per batch size (the engine's buckets to 16). Each call is the
whole TorchRunner.run: stacking the frames, the copy in, features, model, probabilities back on
the host. Shipped mha weights. Needs CUDA; results and reading in README.md.

    python docs/experiments/cuda_graphs/batch_cost.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from rfmodel.bundle import load_bundle, shipped_model_dir
from service.engine import warmup_batch_sizes
from service.inference import TorchRunner

SAMPLES = 32_768
SIZES = warmup_batch_sizes(16)
REPEATS = 50


def main() -> None:
    device = torch.device("cuda")
    bundle = load_bundle(shipped_model_dir("mha", "rmsnorm"), device=device)
    runners = {
        "eager": TorchRunner(bundle.model, bundle.feature_config, device),
        "graphs": TorchRunner(
            bundle.model,
            bundle.feature_config,
            device,
            graph_lengths=[SAMPLES],
            graph_batch_sizes=SIZES,
        ),
    }
    rng = np.random.default_rng(0)
    frame = (0.1 * (rng.standard_normal(SAMPLES) + 1j * rng.standard_normal(SAMPLES))).astype(
        np.complex64
    )
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; median of {REPEATS} calls")
    print("batch | eager ms (preprocess + inference) | graphs ms (copy in + replay) | eager/graphs")
    for size in SIZES:
        batch = [frame] * size
        row = {}
        for name, runner in runners.items():
            for _ in range(3):  # the first call captures the graph, or plans the FFTs
                runner.run(batch)
            walls, pre, inf = [], [], []
            for _ in range(REPEATS):
                start = time.perf_counter()
                out = runner.run(batch)
                walls.append(time.perf_counter() - start)
                pre.append(out.preprocess_s)
                inf.append(out.inference_s)
            row[name] = [1e3 * statistics.median(v) for v in (walls, pre, inf)]
        e, g = row["eager"], row["graphs"]
        print(
            f"{size:5d} | {e[0]:6.2f} ({e[1]:.2f} + {e[2]:.2f}) | {g[0]:6.2f} ({g[1]:.2f} + "
            f"{g[2]:.2f}) | {e[0] / g[0]:.2f}x"
        )


if __name__ == "__main__":
    main()
