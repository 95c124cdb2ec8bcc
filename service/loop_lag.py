"""How late the event loop runs what is due on it: the least lateness of a timer over its last
four samples.

Why the engine's admission needs it: the engine sees only its own queue, but every request also
passes through the one event loop several times (reading its body, the handler, the answer).
When the loop is the bottleneck, requests wait there unseen: on an H100 serving from CUDA graphs,
64 clients of 32k-sample frames kept the engine's queue at a 1.7 ms median while answers took a
median 21 ms in the server and reached a p99 of 179 ms (docs/benchmarks/README.md, 2026-12-06
afternoon). Why the least, as CoDel takes the least sojourn time: a loop that is the bottleneck
is late on every sample, while one stalled now and then (a collection, another thread holding
the GIL on a busy CPU) is on time on some; a mean of the latter refused requests to an idle
engine in the tests' busy two-core runs.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

INTERVAL_S = 0.005  # 200 wake-ups a second: negligible beside requests
WINDOW = 4  # samples: a stall is masked by the three before it; a backlog shows in 4 samples


class LoopLag:
    def __init__(self, on_sample: Callable[[float], None] = lambda lag_s: None):
        self._late: deque[float] = deque([0.0], maxlen=WINDOW)
        self._on_sample = on_sample

    @property
    def lag_s(self) -> float:
        return min(self._late)

    async def watch(self) -> None:
        """Samples the lateness until cancelled; run as a task on the loop it measures."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + INTERVAL_S
            await asyncio.sleep(INTERVAL_S)
            self._late.append(max(0.0, loop.time() - due))
            self._on_sample(self.lag_s)
