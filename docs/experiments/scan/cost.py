"""What a scan costs on the CPU beside classifying: for frames of 32,768, 65,536 and 262,144
samples holding two signals (the captures of accuracy.py, at 20 dB), the median time of
service.scan.signals_in (finding the signals and cutting them out) against TorchRunner.run on the
whole frame and on its cut-outs (the shipped mha-rmsnorm, float32, one torch thread as the
service leaves on 2 cores), each the median of `calls` calls, in one process.

    python docs/experiments/scan/cost.py [calls]      # 2 vCPUs, about a minute
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from rfmodel.bundle import load_bundle, shipped_model_dir
from service.inference import TorchRunner
from service.scan import signals_in

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from accuracy import one_capture  # the experiment's captures


def median_ms(work: Callable[[], object], calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main(calls: int) -> None:
    torch.set_num_threads(1)
    bundle = load_bundle(shipped_model_dir("mha"))
    runner = TorchRunner(bundle.model, bundle.feature_config, torch.device("cpu"))
    rng = np.random.default_rng(0)
    print(
        f"{'samples':>8} {'scan ms':>8} {'signals':>8} {'model on cut-outs ms':>21} "
        f"{'model on the frame ms':>22}"
    )
    for n in (32_768, 65_536, 262_144):
        frame, _ = one_capture(rng, ["qpsk", "fm"], snrs_db=(20.0,), samples=n)
        (found,) = signals_in([frame], max_signals=8, shortest=256)
        for _ in range(3):
            runner.run(found.cuts)
            runner.run([frame])
        scan = median_ms(lambda f=frame: signals_in([f], max_signals=8, shortest=256), calls)
        cuts = median_ms(lambda c=found.cuts: runner.run(c), calls)
        whole = median_ms(lambda f=frame: runner.run([f]), calls)
        print(f"{n:>8} {scan:>8.2f} {len(found.cuts):>8} {cuts:>21.2f} {whole:>22.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
