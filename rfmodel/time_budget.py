"""Fit a training run's steps into a wall-clock limit.

A job on a machine with a hard time limit (a rented GPU, a batch queue) loses everything when it is
killed before the weights are written: the bundles come only at the end, and the end of a cosine
schedule is where most of a fine-tune's gain lands. So `rfcls train --time-limit` times its steps
once they are representative (after warm-up) and shortens the run so the cosine ends in time;
every GUARD_EVERY steps it refits from its mean rate so far (steps slowed from 2.8 to 2.1 a
second within a minute in a CPU run, 7 to 10 on an H100), and should the time run out all the
same it stops at once with its weights written."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

# the first steps pay for cuDNN autotuning, allocator growth and the loader's workers starting
SETTLE_STEPS = 10
MIN_TIMED_STEPS = 20
# how often the clock is read against the limit: on several ranks each reading is a collective
GUARD_EVERY = 10
# the steps measured are not the steps to come: leave this share of the estimate spare
RATE_MARGIN = 1.05


def steps_within(
    limit_s: float, elapsed_s: float, step: int, step_s: float, planned: int, reserve_s: float
) -> int:
    """The last step a run at `step`, elapsed_s into its limit and step_s a step, can finish with
    reserve_s left (for writing its weights); never past `planned`, never before `step`."""
    room_s = limit_s - reserve_s - elapsed_s
    return max(step, min(planned, step + int(room_s // (step_s * RATE_MARGIN))))


@dataclass
class TimeBudget:
    """The job's wall-clock limit, counted from `started` (time.perf_counter() when the process
    began its setup: building the models and the loader counts too)."""

    limit_s: float
    started: float
    fit_after: int  # steps of this job after which its rate fits the run: warm-up's end or later
    reserve_s: float = field(init=False)
    _settled: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.reserve_s = max(10.0, 0.03 * self.limit_s)
        self.fit_after = max(self.fit_after, SETTLE_STEPS + MIN_TIMED_STEPS)

    def elapsed_s(self, now: float) -> float:
        return now - self.started

    def decides(self, done: int) -> bool:
        """Whether after_step may move the end after `done` steps (the steps where ranks must
        agree)."""
        return done == self.fit_after or done % GUARD_EVERY == 0

    def after_step(self, done: int, step: int, end: int, now: float | None = None) -> int | None:
        """Called after each step (`done` steps into this job, at `step` of a run planned to
        end at `end`): a new, earlier end when the plan does not fit (from fit_after on) or the
        time is up (the current step); None while the plan stands."""
        now = time.perf_counter() if now is None else now
        if done == SETTLE_STEPS:
            self._settled = now
        if not self.decides(done):
            return None
        if self.elapsed_s(now) >= self.limit_s - self.reserve_s:
            return step if step < end else None
        if done >= self.fit_after and self._settled is not None:
            # only ever sooner: a later end would stretch a cosine already partly run
            step_s = (now - self._settled) / (done - SETTLE_STEPS)
            fitted = steps_within(
                self.limit_s, self.elapsed_s(now), step, step_s, end, self.reserve_s
            )
            return fitted if fitted < end else None
        return None
