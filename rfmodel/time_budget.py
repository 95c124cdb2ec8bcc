"""Fit a training run's steps into a wall-clock limit.

A job on a machine with a hard time limit (a rented GPU, a batch queue) loses everything when it is
killed before the weights are written: the bundles come only at the end, and the end of a cosine
schedule is where most of a fine-tune's gain lands. So `rfcls train --time-limit` times its steps
once they are representative (after warm-up) and moves the run's end so the cosine ends in time;
every GUARD_EVERY steps it refits from the rate of the latest half of its steps (steps slowed
from 2.8 to 2.1 a second within a minute in a CPU run, 7 to 10 on an H100), and should the time
run out all the same it stops at once with its weights written.

The end moves later again too, until the cosine's last tenth: the cosine bends where it stands
(rfmodel/lr_schedule.py), so the lr never jumps. On an H100 the loader's 15 workers took the
first few hundred steps to reach their pace (13-15 steps a second, then 17), and an end fitted
at warm-up from those steps alone left a quarter of the limit unused (session 25's run 10 ended
at 383 s of 560); session 29's run 12 slowed to two thirds of its pace for about a minute from
a minute in, and with later moves allowed only in the cosine's first quarter it ended at 421 s
of 564."""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field

# the first steps pay for cuDNN autotuning, allocator growth and the loader's workers starting
SETTLE_STEPS = 10
MIN_TIMED_STEPS = 20
# how often the clock is read against the limit: on several ranks each reading is a collective
GUARD_EVERY = 10
# the steps measured are not the steps to come: leave this share of the estimate spare
RATE_MARGIN = 1.05
# the end moves by this share of it or more: the rate of the latest steps wanders by a few per
# cent (a 200 s run on an H100 refitted its end 47 times between 3,030 and 3,300 steps), which
# RATE_MARGIN and the reserve absorb; the lr need not follow it
MOVE_BY = 0.02
# a later end is a bet that the steps to come keep the pace of the latest: taken when it gains
# more than RATE_MARGIN's share, and not in the cosine's last tenth, where the time it could win
# is under the guard's interval and the run would stop just short of the end it moved to
EXTEND_BY = 0.05
EXTEND_UNTIL = 0.9


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
    planned: int  # the run's last step as asked for: no end moves past it
    reserve_s: float = field(init=False)
    _marks: list[tuple[int, float]] = field(default_factory=list, init=False)  # (done, clock)
    _checked: tuple[int, float] | None = field(default=None, init=False)  # the last decision's

    def __post_init__(self) -> None:
        self.reserve_s = max(10.0, 0.03 * self.limit_s)
        self.fit_after = max(self.fit_after, SETTLE_STEPS + MIN_TIMED_STEPS)

    def elapsed_s(self, now: float) -> float:
        return now - self.started

    def decides(self, done: int) -> bool:
        """Whether after_step may move the end after `done` steps (the steps where ranks must
        agree): the first (a limit already spent on setup), then every GUARD_EVERY."""
        return done == 1 or done == self.fit_after or done % GUARD_EVERY == 0

    def after_step(self, done: int, step: int, end: int, now: float | None = None) -> int | None:
        """Called after each step (`done` steps into this job, at `step` of a run now ending at
        `end`): a new end when the current one does not fit (from fit_after on), leaves time
        unused early in the run, or the time is up (the current step); None while it stands."""
        now = time.perf_counter() if now is None else now
        if done == SETTLE_STEPS:
            self._marks.append((done, now))
        if not self.decides(done):
            return None
        # the next decision is up to GUARD_EVERY steps away: stop now unless they fit too
        ahead_s = 0.0
        if self._checked is not None:
            since, then = self._checked
            ahead_s = GUARD_EVERY * RATE_MARGIN * (now - then) / (done - since)
        self._checked = (done, now)
        if self.elapsed_s(now) + ahead_s >= self.limit_s - self.reserve_s:
            return step if step < end else None
        if done <= SETTLE_STEPS:
            return None
        step_s = self.step_s(done, now)
        self._marks.append((done, now))
        if done < self.fit_after:
            return None
        fitted = steps_within(
            self.limit_s, self.elapsed_s(now), step, step_s, self.planned, self.reserve_s
        )
        if fitted < end - MOVE_BY * end:
            return fitted
        if fitted >= end + EXTEND_BY * end and step < EXTEND_UNTIL * end:
            return fitted
        return None

    def step_s(self, done: int, now: float) -> float:
        """Seconds a step over the latest half of the steps timed (the loader's ramp drops out),
        and over MIN_TIMED_STEPS at least."""
        half = min(SETTLE_STEPS + (done - SETTLE_STEPS) // 2, done - MIN_TIMED_STEPS)
        first = min(bisect.bisect_left(self._marks, (half,)), len(self._marks) - 1)
        since, then = self._marks[first]
        return (now - then) / (done - since)
