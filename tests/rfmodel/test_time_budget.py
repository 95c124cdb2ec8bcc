"""--time-limit: the run's steps fitted into a wall-clock limit (rfmodel/time_budget.py), unit by
unit with a fake clock, then a real tiny run that must end early with its weights written."""

import json

import pytest
import torch

from rfmodel import train as train_module
from rfmodel.bundle import load_bundle
from rfmodel.lr_schedule import MIN_LR_RATIO, Cosine
from rfmodel.time_budget import RATE_MARGIN, SETTLE_STEPS, TimeBudget, steps_within
from rfmodel.train import CHECKPOINT_FILE, LOG_FILE
from service.cli import main
from tests.rfmodel.test_train import TINY, die_at_step, log_events, train


def test_steps_within_counts_the_steps_that_fit_and_never_passes_the_plan():
    # 100 s limit, 10 kept back, 30 s gone: 60 s at 0.5 s a step (plus the margin)
    assert steps_within(100, 30, 40, 0.5, 10_000, 10) == 40 + int(60 // (0.5 * RATE_MARGIN))
    assert steps_within(100, 30, 40, 0.5, 50, 10) == 50
    assert steps_within(100, 95, 40, 0.5, 10_000, 10) == 40  # already late: stop here


def run_fake(budget: TimeBudget, step_s, end: int, setup_s: float = 0.0):
    """Steps taking step_s(done) seconds each after setup_s, from the budget's start, until the
    end: the (step, new end) pairs the budget gave, and the clock at the end."""
    changes, now = [], setup_s
    for done in range(1, budget.planned + 1):
        now += step_s(done)
        new_end = budget.after_step(done, done, end, now=now)
        if new_end is not None:
            changes.append((done, new_end))
            end = new_end
        if done == end:
            break
    return changes, now


def test_a_plan_that_fits_is_left_alone():
    budget = TimeBudget(100.0, 0.0, fit_after=50, planned=1000)
    assert run_fake(budget, lambda _: 0.01, end=1000)[0] == []


def test_a_plan_too_long_ends_at_the_warmup_fit_with_the_reserve_kept():
    budget = TimeBudget(100.0, 0.0, fit_after=50, planned=10_000)
    changes, elapsed = run_fake(budget, lambda _: 0.1, end=10_000, setup_s=5.0)
    assert [done for done, _ in changes] == [50]
    assert elapsed <= 100 - budget.reserve_s
    assert elapsed > 100 - budget.reserve_s - 100 * (RATE_MARGIN - 1)  # not much sooner
    assert changes[0][1] == steps_within(100, 5.0 + 50 * 0.1, 50, 0.1, 10_000, budget.reserve_s)


def test_steps_that_slow_down_move_the_end_sooner_and_the_run_ends_in_time():
    budget = TimeBudget(100.0, 0.0, fit_after=SETTLE_STEPS + 20, planned=10_000)
    # ten times slower after step 200
    changes, elapsed = run_fake(budget, lambda done: 0.1 if done <= 200 else 1.0, end=10_000)
    assert changes[0][0] == SETTLE_STEPS + 20
    ends = [end for _, end in changes]
    assert ends == sorted(ends, reverse=True) and len(ends) > 2  # refitted as the rate fell
    assert elapsed <= 100 - budget.reserve_s + 10 * 1.0  # within one guard interval of the reserve


def test_an_end_fitted_to_slow_first_steps_moves_later_once_they_speed_up():
    budget = TimeBudget(100.0, 0.0, fit_after=50, planned=10_000)
    # a loader ramping up: steps 0.2 s each until step 80, then 0.1 s
    changes, elapsed = run_fake(budget, lambda done: 0.2 if done <= 80 else 0.1, end=10_000)
    first_end = changes[0][1]
    assert changes[0][0] == 50 and first_end < 500  # fitted to the slow steps
    assert changes[-1][1] > 1.3 * first_end  # moved later as the steps sped up
    assert 100 - budget.reserve_s - 10 < elapsed <= 100 - budget.reserve_s  # the limit used


def test_steps_that_speed_up_late_in_the_run_move_the_end_later_and_use_the_limit():
    budget = TimeBudget(100.0, 0.0, fit_after=50, planned=10_000)
    # steady, then three times faster from step 400: past a quarter of the end fitted at 50
    changes, elapsed = run_fake(budget, lambda done: 0.1 if done <= 400 else 0.033, end=10_000)
    assert changes[0][0] == 50 and max(end for _, end in changes) > 1.5 * changes[0][1]
    assert 100 - budget.reserve_s - 5 < elapsed <= 100 - budget.reserve_s


def test_a_minute_of_slow_steps_mid_run_does_not_end_the_run_early():
    """Session 29's run 12 on an H100: its steps slowed to two thirds of their pace from about
    60 s to 100 s of a 564 s limit, the end was pulled in to fit, and it ended at 421 s."""
    budget = TimeBudget(564.0, 0.0, fit_after=100, planned=7000)
    changes, elapsed = run_fake(
        budget, lambda done: 0.15 if 550 < done <= 850 else 0.1, end=7000, setup_s=10.0
    )
    ends = [end for _, end in changes]
    assert min(ends) < ends[-1]  # pulled in during the slow minute, then out again
    assert 564 - budget.reserve_s - 564 * (RATE_MARGIN - 1) < elapsed <= 564 - budget.reserve_s


def test_a_rate_that_wanders_by_a_few_per_cent_leaves_the_end_where_it_was_fitted():
    budget = TimeBudget(100.0, 0.0, fit_after=50, planned=10_000)
    # 4 % slower and faster by turns, every 37 steps
    changes, elapsed = run_fake(
        budget, lambda done: 0.1 * (1.04 if (done // 37) % 2 else 0.96), end=10_000
    )
    assert len(changes) <= 6  # 16 where every refit moved it
    assert 80 < elapsed <= 100 - budget.reserve_s


def test_steps_as_long_as_the_reserve_stop_a_guard_interval_early():
    # ten 0.99 s steps fill the 10 s reserve: waiting for the next check would spend it
    budget = TimeBudget(20.0, 0.0, fit_after=50, planned=10**6)
    changes, elapsed = run_fake(budget, lambda done: 0.99, end=10**6)
    assert changes == [(10, 10)] and elapsed <= 20 - budget.reserve_s


def test_a_limit_spent_on_setup_stops_after_the_first_step():
    budget = TimeBudget(20.0, 0.0, fit_after=50, planned=1000)
    assert run_fake(budget, lambda done: 1.0, end=1000, setup_s=25.0)[0] == [(1, 1)]


def test_a_sudden_stall_stops_the_run_where_it_stands():
    budget = TimeBudget(100.0, 0.0, fit_after=SETTLE_STEPS + 20, planned=10_000)
    # a 70 s stall at step 500, past the reserve: nothing to refit, only to stop
    changes, elapsed = run_fake(budget, lambda done: 70.0 if done == 500 else 0.05, end=10_000)
    late_at, late_end = changes[-1]
    assert late_at == late_end  # stopped at the step the time ran out
    assert late_at == 500 and elapsed < 100


def test_a_time_limited_run_ends_its_cosine_early_and_writes_its_weights(tmp_path, capsys):
    steps = 1_000_000
    args = ["train", "--out", str(tmp_path), *TINY, "--steps", str(steps), "--warmup-steps", "5"]
    assert main([*args, "--time-limit", "20", "--log-every", "1000000"]) == 0
    assert "time limit 20 s: the run ends at step" in capsys.readouterr().out
    record = load_bundle(tmp_path / "mha-rmsnorm").training
    assert SETTLE_STEPS < record["steps"] < steps
    assert record["planned_steps"] == steps and record["time_limit_s"] == 20
    assert record["wall_time_s"] < 20
    events = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    (last,) = [e for e in events if e["event"] == "train"]  # the end's record only
    assert last["step"] == record["steps"]
    assert last["lr"] == pytest.approx(3e-3 * MIN_LR_RATIO)  # the cosine ran to its floor


def test_a_time_limit_needs_the_warmup_in_steps(tmp_path, capsys):
    # 5 % of a --steps the clock cuts short could outlast the limit: stopped on a rising lr
    args = ["train", "--out", str(tmp_path), *TINY, "--steps", "100000", "--time-limit", "20"]
    assert main(args) == 2
    assert "give --warmup-steps" in capsys.readouterr().err


def test_a_resumed_job_trains_on_its_own_schedule_from_its_first_step(tmp_path, monkeypatch):
    common = ("--warmup-steps", "2", "--log-every", "1")
    assert train(tmp_path, "--steps", "8", *common, "--stop-at", "4") == 0
    used = []
    real_step = train_module.train_step

    def spy(m, *args):
        used.append(m.optimizer.param_groups[0]["lr"])
        return real_step(m, *args)

    monkeypatch.setattr(train_module, "train_step", spy)
    assert train(tmp_path, "--steps", "16", *common, "--resume", "--stop-at", "6") == 0
    new = Cosine(2, 16).factor  # not the first job's Cosine(2, 8)
    assert used == [pytest.approx(3e-3 * new(4)), pytest.approx(3e-3 * new(5))]


def test_a_resumed_job_asking_fewer_steps_than_the_moved_end_ends_at_its_own(tmp_path, monkeypatch):
    # the first job's time limit moves the end to 30 at step 3; the job dies after step 6
    monkeypatch.setattr(
        TimeBudget, "after_step", lambda self, done, step, end, now=None: 30 if step == 3 else None
    )
    die_at_step(monkeypatch, 7)
    common = ("--warmup-steps", "2", "--log-every", "1", "--checkpoint-every", "2")
    with pytest.raises(RuntimeError, match="went away"):
        train(tmp_path, "--steps", "40", *common, "--time-limit", "1000")
    monkeypatch.undo()
    assert train(tmp_path, "--steps", "12", *common, "--resume") == 0
    assert load_bundle(tmp_path / "mha-rmsnorm").training["steps"] == 12
    (last,) = [e for e in log_events(tmp_path, "train") if e["step"] == 12]
    assert last["lr"] == pytest.approx(3e-3 * MIN_LR_RATIO)  # its cosine ran to the floor


def test_time_limit_and_stop_at_together_are_refused(tmp_path, capsys):
    args = ["train", "--out", str(tmp_path), *TINY, "--steps", "4", "--stop-at", "2"]
    assert main([*args, "--time-limit", "60"]) == 2
    assert "time-limit" in capsys.readouterr().err


def test_the_training_loop_follows_an_end_moved_sooner_then_later(tmp_path, monkeypatch):
    moves = {3: 6, 4: 9}  # done -> the end the budget gives

    def after_step(self, done, step, end, now=None):
        return moves.get(done)

    monkeypatch.setattr(TimeBudget, "after_step", after_step)
    args = ["train", "--out", str(tmp_path), *TINY, "--steps", "12", "--warmup-steps", "2"]
    assert main([*args, "--time-limit", "600", "--log-every", "1"]) == 0
    record = load_bundle(tmp_path / "mha-rmsnorm").training
    assert record["steps"] == 9 and record["planned_steps"] == 12
    events = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    last = [e for e in events if e["event"] == "train"][-1]
    assert last["step"] == 9 and last["lr"] == pytest.approx(3e-3 * MIN_LR_RATIO)
    assert [(e["step"], e["end"]) for e in events if e["event"] == "end_moved"] == [(3, 6), (4, 9)]
    # the lr in effect after each step: the cosine over 12 steps, bent at step 3 to end at 6,
    # then at step 4 to end at 9, never jumping at a bend
    lr = [e["lr"] / 3e-3 for e in events if e["event"] == "train"]
    first = Cosine(2, 12)
    second = first.ending_at(6, 3)
    bent = second.ending_at(9, 4)
    expected = [first.factor(1), first.factor(2), second.factor(3)]
    assert lr == pytest.approx(expected + [bent.factor(s) for s in range(4, 10)])
    # the checkpoint keeps the later end, so --resume finds the run complete, not 3 steps short
    saved = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=False)["fitted_cosine"]
    assert Cosine(**saved) == bent
    assert main([*args, "--time-limit", "600", "--resume"]) == 0
    assert load_bundle(tmp_path / "mha-rmsnorm").training["steps"] == 9
