"""The queue-wait limit: it rises while answers are quick, is cut at once when they are slow, and
holds in between (service/admission.py)."""

from __future__ import annotations

import pytest

from service import admission
from service.admission import QueueWaitLimit

BUDGET = 0.030
FLOOR, CEILING = 0.006, 0.015
QUICK, BETWEEN, SLOW = 0.010, 0.023, 0.028  # under the lower mark, between the marks, over both


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def steered() -> tuple[QueueWaitLimit, Clock]:
    clock = Clock()
    return QueueWaitLimit(FLOOR, CEILING, BUDGET, clock=clock), clock


def answer(limit: QueueWaitLimit, clock: Clock, latencies: list[float], over_s: float) -> None:
    """The latencies answered evenly over over_s seconds, the last at its end."""
    start = clock.now
    for i, latency in enumerate(latencies, 1):
        clock.now = start + over_s * i / len(latencies)
        limit.observe(latency)


def test_starts_at_the_floor_and_rises_a_step_per_quick_interval_up_to_the_ceiling():
    limit, clock = steered()
    assert limit.limit_s == FLOOR
    seen = []
    for _ in range(8):
        answer(limit, clock, [QUICK] * 100, admission.INTERVAL_S)
        seen.append(limit.limit_s)
    step = admission.STEP * BUDGET  # 1.5 ms: six steps from the floor to the ceiling
    assert seen == pytest.approx([min(FLOOR + k * step, CEILING) for k in range(1, 9)])
    assert seen[-2:] == [CEILING] * 2  # exactly: it stops at the ceiling


def test_more_than_one_percent_slow_answers_halve_it_at_once_but_not_below_the_floor():
    limit, clock = steered()
    for _ in range(7):
        answer(limit, clock, [QUICK] * 100, admission.INTERVAL_S)
    assert limit.limit_s == CEILING
    # one slow answer in a hundred is the p99's allowance; the second cuts, mid-interval
    answer(limit, clock, [QUICK] * 99 + [SLOW], 0.2)
    assert limit.limit_s == CEILING
    answer(limit, clock, [SLOW], 0.001)
    assert limit.limit_s == pytest.approx(CEILING / 2)
    answer(limit, clock, [SLOW] * admission.MIN_ANSWERS, 0.01)
    assert limit.limit_s == FLOOR


def test_it_holds_while_the_tail_lies_between_the_marks():
    limit, clock = steered()
    for _ in range(2):
        answer(limit, clock, [QUICK] * 100, admission.INTERVAL_S)
    held = limit.limit_s
    for _ in range(5):
        answer(limit, clock, [QUICK] * 95 + [BETWEEN] * 5, admission.INTERVAL_S)
    assert limit.limit_s == held


def test_too_few_answers_move_nothing():
    limit, clock = steered()
    answer(limit, clock, [QUICK] * (admission.MIN_ANSWERS - 1), 10 * admission.INTERVAL_S)
    answer(limit, clock, [SLOW], 0.0)  # the twentieth, and slow: cut, but it is at the floor
    assert limit.limit_s == FLOOR
    limit, clock = steered()
    answer(limit, clock, [QUICK] * (admission.MIN_ANSWERS - 1), 10 * admission.INTERVAL_S)
    assert limit.limit_s == FLOOR


def test_a_limit_whose_floor_is_its_ceiling_never_moves():
    limit = QueueWaitLimit(0.05, 0.05, BUDGET)
    for latency in [0.0] * 1000 + [10.0] * 1000:
        limit.observe(latency)
    assert limit.limit_s == 0.05


def test_floor_and_ceiling_must_be_ordered():
    with pytest.raises(ValueError, match="floor <= ceiling"):
        QueueWaitLimit(0.02, 0.01, BUDGET)
