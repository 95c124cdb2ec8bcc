"""The event loop's lag: it follows a loop kept busy, ignores a single stall, and falls back once
the loop is free."""

from __future__ import annotations

import asyncio
import time

from service.loop_lag import LoopLag


def test_the_lag_follows_a_busy_loop_not_a_single_stall():
    samples: list[float] = []
    lag = LoopLag(on_sample=samples.append)

    async def busy(seconds: float) -> None:
        """Every turn of the loop holds it 20 ms, as a backlog of requests would."""
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            time.sleep(0.02)
            await asyncio.sleep(0)

    async def scenario() -> tuple[float, float, float]:
        watching = asyncio.create_task(lag.watch())
        await asyncio.sleep(0.1)
        time.sleep(0.1)  # one stall
        await asyncio.sleep(0.012)
        stalled = lag.lag_s
        await busy(0.5)
        loaded = lag.lag_s
        await asyncio.sleep(0.2)  # free again
        watching.cancel()
        return stalled, loaded, lag.lag_s

    stalled, loaded, recovered = asyncio.run(scenario())
    # a timer comes due inside a 20 ms turn and its coroutine resumes turns later
    assert loaded > 0.015
    assert stalled < 0.005 and recovered < 0.005
    assert samples and samples[-1] == recovered
