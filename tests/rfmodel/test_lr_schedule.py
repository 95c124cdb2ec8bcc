"""The warm-up + cosine schedule and its bends (rfmodel/lr_schedule.py), against the formula
written out, and followed step by step through random ends a time limit could give."""

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rfmodel.lr_schedule import MIN_LR_RATIO, Cosine


def textbook(warmup: int, end: int, step: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = 1.0 if step >= end else (step - warmup) / (end - warmup)
    return MIN_LR_RATIO + (1 - MIN_LR_RATIO) * (1 + math.cos(math.pi * progress)) / 2


@given(st.integers(1, 200), st.integers(0, 5000))
def test_an_unbent_cosine_is_the_formula(warmup, length):
    end = warmup + length
    schedule = Cosine(warmup, end)
    for step in sorted({0, warmup - 1, warmup, (warmup + end) // 2, end - 1, end, end + 7}):
        if step >= 0:
            assert schedule.factor(step) == pytest.approx(textbook(warmup, end, step), abs=1e-12)


@given(
    st.integers(1, 50),
    st.integers(60, 3000),
    st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 4000)), min_size=1, max_size=8),
)
def test_a_cosine_bent_at_any_steps_never_jumps_never_rises_and_ends_at_its_floor(
    warmup, end, moves
):
    """Steps one after another, each move (a fraction of the way to the current end, a new
    end) bending the schedule where the run stands, as the training loop does; an end at or
    before the step stands on is the time running out, which ends the run at its floor."""
    schedule, step, lrs = Cosine(warmup, end), 0, []
    for where, new_end in moves:
        stop = step + int(where * (schedule.end - step))
        while step < stop:
            lrs.append(schedule.factor(step))
            step += 1
        if new_end <= step:  # the time is up: the run ends here, at the floor
            schedule = schedule.ending_at(step, step)
            break
        bent = schedule.ending_at(new_end, step)
        assert bent.factor(step) == pytest.approx(schedule.factor(step), abs=1e-12)
        schedule = bent
    while step <= schedule.end:
        lrs.append(schedule.factor(step))
        step += 1
    decay = lrs[warmup:]
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(decay))
    if schedule.end >= warmup:
        assert lrs[-1] == pytest.approx(MIN_LR_RATIO, abs=1e-12)
        assert schedule.factor(schedule.end + 100) == pytest.approx(MIN_LR_RATIO, abs=1e-12)


def test_a_bend_halfway_spreads_the_rest_of_the_cosine_over_the_new_steps():
    # half-way down a cosine over steps 10..110 (progress 0.5 at step 60), bent to end at 160:
    # the other half of the cosine now spans 100 steps
    bent = Cosine(10, 110).ending_at(160, 60)
    assert bent.progress(60) == pytest.approx(0.5)
    assert bent.progress(110) == pytest.approx(0.75)
    assert bent.factor(110) == pytest.approx(textbook(10, 110, 85))


def test_a_bend_in_the_warmup_keeps_the_warmup_and_starts_the_cosine_after_it():
    bent = Cosine(100, 1000).ending_at(500, 40)
    assert [bent.factor(s) for s in (0, 40, 99)] == pytest.approx([0.01, 0.41, 1.0])
    assert [bent.factor(s) for s in (100, 300, 500)] == pytest.approx(
        [textbook(100, 500, s) for s in (100, 300, 500)]
    )
