"""Experiment: the engine's batching and admission against a simulated device, 64 closed-loop
clients, one 32,768-sample frame per request. The device sleeps a fixed part plus a part per
frame (sleeping frees the GIL, as a GPU's work does); after warm-up both parts change, as they
did on an H100 under load (the host's launches slow down). A client refused with 503 waits 0.5-1.5
s, as the batching benchmark's do. The engine is the real one (service/engine.py), with the
service's default limits for a 30 ms budget; its latency here is the engine's alone (no HTTP).

    python docs/experiments/batch_close/simulate.py
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "service")]

from scripted_runner import ScriptedRunner  # noqa: E402

from service.admission import QueueWaitLimit  # noqa: E402
from service.engine import QueueFull  # noqa: E402
from tests.service.test_engine import make_engine, started  # noqa: E402

BUDGET_S = 0.030
SAMPLES = 32768
# (fixed ms, per-frame ms) under load, and at warm-up
DEVICES = {
    "fixed part unchanged": ((6.3, 0.48), (6.3, 0.10)),
    "fixed part grown under load": ((11.2, 0.18), (6.3, 0.10)),
}


def simulate(load: tuple, warm: tuple, clients: int = 64, duration_s: float = 5.0) -> str:
    runner = ScriptedRunner(seconds_per_batch=warm[0] / 1e3, seconds_per_frame=warm[1] / 1e3)
    queue_wait = QueueWaitLimit(0.2 * BUDGET_S, 0.5 * BUDGET_S, budget_s=BUDGET_S)
    engine = make_engine(
        runner,
        max_batch=16,
        max_wait_s=0.001,
        max_queue=256,
        deadline_s=4 * BUDGET_S,
        warmup_samples=SAMPLES,
        queue_wait=queue_wait,
    )
    started(engine, runner)
    runner.seconds_per_batch, runner.seconds_per_frame = load[0] / 1e3, load[1] / 1e3
    latencies, refused = [], 0

    async def client(tag: int) -> None:
        nonlocal refused
        end = time.perf_counter() + duration_s
        while time.perf_counter() < end:
            begun = time.perf_counter()
            try:
                await engine.predict([np.full(SAMPLES, tag, np.complex64)])
            except QueueFull:
                refused += 1
                await asyncio.sleep(random.uniform(0.5, 1.5))
                continue
            latencies.append(time.perf_counter() - begun)
            engine.observe_admitted(latencies[-1])

    async def run_all() -> None:
        await asyncio.gather(*(client(t) for t in range(clients)))

    asyncio.run(run_all())
    engine.stop()
    ms = 1e3 * np.array(latencies)
    return (
        f"{len(ms) / duration_s:,.0f} frames/s, refused {refused}, "
        f"p50 {np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, "
        f"mean batch {np.mean([len(b) for b in runner.batches]):.1f}"
    )


def main() -> None:
    for name, (load, warm) in DEVICES.items():
        print(f"{name} ({load[0]:g} ms + {load[1]:g} ms a frame): {simulate(load, warm)}")


if __name__ == "__main__":
    main()
