"""Does one long frame reprice the short ones? The shipped model's engine (CPU, float32), pairs
of 32,768-sample requests, the second sent 18 ms into the first's batch, before and after one
262,144-sample frame; prints the second request's outcome of each pair.

Usage, from the repo root: python docs/benchmarks/engine-ab-session20/long_frame.py
"""

from __future__ import annotations

import asyncio

import numpy as np

from service.app import build_context
from service.loading import load_model
from service.settings import Settings


async def main() -> None:
    settings = Settings(precision="float32")
    card, runner = load_model(settings)
    engine = build_context(settings, card, runner).engine
    engine.start()
    engine.wait_for_warm_up()
    rng = np.random.default_rng(0)

    def noise(n: int) -> np.ndarray:
        return (0.3 * (rng.standard_normal(n) + 1j * rng.standard_normal(n))).astype(np.complex64)

    short, long = noise(32_768), noise(262_144)

    async def outcome(frames: list[np.ndarray]) -> str:
        try:
            await engine.predict(frames)
        except Exception as exc:  # the refusal is the measurement
            return type(exc).__name__
        return "200"

    async def pairs(label: str, n: int = 6) -> None:
        seconds = []
        for _ in range(n):
            first = asyncio.create_task(outcome([short]))
            await asyncio.sleep(0.018)
            second = asyncio.create_task(outcome([short]))
            await first
            seconds.append(await second)
            await asyncio.sleep(0.03)
        print(f"{label}: the second of each pair: {seconds}", flush=True)

    await pairs("before")
    await outcome([long])
    await pairs("after one 262,144-sample frame")
    await pairs("later")
    engine.stop()


if __name__ == "__main__":
    asyncio.run(main())
