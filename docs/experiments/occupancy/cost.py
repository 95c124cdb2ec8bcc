"""What the measurements add to a request on the CPU: TorchRunner.run on one 32,768-sample frame
(the shipped mha-rmsnorm, float32, one torch thread as the service leaves on 2 cores, so the
measurements run on the second thread beside the model), with the measurements and with them
replaced by a stub that returns NaN at once, alternating in one process.

    python docs/experiments/occupancy/cost.py [pairs]      # 2 vCPUs, about two minutes
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

import service.inference
from preprocessing.occupancy import FIELDS, occupied_band
from rfmodel.bundle import load_bundle
from service.inference import TorchRunner


def stub(iq: torch.Tensor) -> torch.Tensor:
    return torch.full((iq.shape[0], len(FIELDS)), float("nan"))


def median_ms(runner: TorchRunner, frame: list[np.ndarray], calls: int = 200) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        runner.run(frame)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main(pairs: int) -> None:
    torch.set_num_threads(1)
    bundle = load_bundle("rfmodel/weights/mha-rmsnorm")
    runner = TorchRunner(bundle.model, bundle.feature_config, torch.device("cpu"))
    rng = np.random.default_rng(0)
    frame = [
        (0.3 * (rng.standard_normal(32768) + 1j * rng.standard_normal(32768))).astype(np.complex64)
    ]
    for _ in range(30):
        runner.run(frame)
    rows = {"with": [], "without": []}
    for _ in range(pairs):
        for name, measure in (("with", occupied_band), ("without", stub)):
            service.inference.occupied_band = measure
            rows[name].append(median_ms(runner, frame))
    service.inference.occupied_band = occupied_band
    for name, values in rows.items():
        print(
            f"{name:>8} the measurements: median {np.median(values):.2f} ms "
            f"(medians of {pairs} runs of 200 calls: {', '.join(f'{v:.2f}' for v in values)})"
        )
    ratio = np.median(rows["with"]) / np.median(rows["without"])
    print(f"ratio {ratio:.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6)
