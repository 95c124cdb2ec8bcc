"""How long the work ahead of a newcomer may take before the engine refuses it (service/engine.py):
a limit steered by the latencies of the requests it admits.

Why it moves: a fixed limit has to be set for overload, where the host's share of each request
(HTTP, the GIL, refusing the rest) grows and only a fifth of the budget kept the admitted p99
within it on 2 cores. Below overload the same limit refuses requests that would have been
answered in time: 8 % of them at 0.7x load (docs/reliability.md). So the limit starts at its
floor and follows the answers, as TCP's window follows losses: once more than 1 % of the answers
since the last change took longer than the upper mark, it is halved (down to the floor) at once;
once an interval has passed in which at most 1 % took longer than the lower mark, it grows by a
step (up to the ceiling). Between the marks it holds still. On 2 cores this refused 1.8 % at
0.7x load (p99 23 ms) and, at 3x, admitted more at a lower p99 than the fixed floor.

Torch-free and single-threaded: the HTTP layer observes and the engine reads the limit, both on
the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# of the budget: answers slower than the upper mark cut the limit, and it grows only while they
# stay under the lower mark; the gap keeps it from hunting. The client sees a little more than the
# server measures (HTTP in the kernel, its own time). At 0.6 and 0.8, 0.7x load on 2 cores still
# saw 6 % refused (p99 21 ms).
UPPER_MARK = 0.85
LOWER_MARK = 0.7
STEP = 0.05  # of the budget, per interval
DECREASE = 0.5
TAIL = 0.01  # the share of answers allowed past a mark: the limit steers the p99
INTERVAL_S = 0.5
MIN_ANSWERS = 20  # p99 needs some answers behind it; under this rate the limit holds


class QueueWaitLimit:
    def __init__(
        self,
        floor_s: float,
        ceiling_s: float,
        budget_s: float,
        clock: Callable[[], float] = time.perf_counter,
    ):
        if not 0 < floor_s <= ceiling_s:
            raise ValueError(f"need 0 < floor <= ceiling, got {floor_s} and {ceiling_s}")
        self.floor_s = floor_s
        self.ceiling_s = ceiling_s
        self.limit_s = floor_s
        # the upper mark: what an admitted request's time in the server should stay under
        self.target_s = UPPER_MARK * budget_s
        self._lower_s = LOWER_MARK * budget_s
        self._step_s = STEP * budget_s
        self._clock = clock
        self._restart()

    def _restart(self) -> None:
        self._since = self._clock()
        self._answers = 0
        self._over_upper = 0
        self._over_lower = 0

    def observe(self, seconds: float) -> None:
        """The latency of one admitted request (answered, or dropped at its deadline), as the
        HTTP layer measured it."""
        self._answers += 1
        self._over_upper += seconds > self.target_s
        self._over_lower += seconds > self._lower_s
        if self._answers < MIN_ANSWERS:
            return
        if self._over_upper > TAIL * self._answers:
            self.limit_s = max(self.floor_s, DECREASE * self.limit_s)
            self._restart()
        elif self._clock() - self._since >= INTERVAL_S:
            if self._over_lower <= TAIL * self._answers:
                self.limit_s = min(self.ceiling_s, self.limit_s + self._step_s)
            self._restart()
