"""The training runs' learning-rate schedule: linear warm-up, then a cosine decay to a floor.

A time limit (rfmodel/time_budget.py) may move the cosine's end while it runs. The decay then
bends where it stands: from the step of the move the cosine's progress goes on from its value
there to 1 at the new end, so the lr never jumps, it only falls faster or slower. (A cosine
rebuilt over the new end from the warm-up would set the lr higher or lower at once, the more
the further the run had gone, which is why an end could once move later only while the cosine
had barely begun.)"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

MIN_LR_RATIO = 0.05  # the cosine decays to this fraction of --lr, not to zero


@dataclass(frozen=True)
class Cosine:
    """The lr factor of each step (the steps done before it): (step + 1) / warmup during the
    warm-up, then MIN_LR_RATIO + (1 - MIN_LR_RATIO) (1 + cos(pi p)) / 2, the progress p going
    linearly from `progress_at` at step `bent_at` (0 at the warm-up's end while unbent) to 1 at
    `end`, and staying there."""

    warmup: int
    end: int
    bent_at: int = 0
    progress_at: float = 0.0

    def progress(self, step: int) -> float:
        """The cosine's progress, 0 to 1, after `step` steps; a step before the bend reads as
        the bend (the schedule is only ever asked forward)."""
        start = max(self.warmup, self.bent_at)
        if step >= self.end:  # also an end at the bend: a run whose time ran out there
            return 1.0
        done = max(0, step - start) / max(1, self.end - start)
        return self.progress_at + (1 - self.progress_at) * done

    def factor(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        cosine = 0.5 * (1 + math.cos(math.pi * self.progress(step)))
        return MIN_LR_RATIO + (1 - MIN_LR_RATIO) * cosine

    def ending_at(self, end: int, step: int) -> Cosine:
        """The same decay, bent at `step` to reach its floor at `end` instead."""
        return replace(self, end=end, bent_at=step, progress_at=self.progress(step))
