"""`rfcls bench batching`: one request at a time, then dynamic batching on and off under concurrent
clients, against real servers; and the overhead, throughput ratio and checks on synthetic
answers."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from pathlib import Path

import pytest

from benchmarks.batching import checks, positive_ints, ratio_between, sequential_summary
from benchmarks.load import Answer, Request, closed_loop, open_loop
from benchmarks.service_load import summarize
from service.cli import main as rfcls

BUDGET_MS = 30.0


def answer(status: int, latency_ms: float, preprocess_ms: float = 1.0, inference_ms: float = 3.0):
    timings = {"queue": 0.5, "preprocess": preprocess_ms, "inference": inference_ms, "total": 5.0}
    body = json.dumps({"timings_ms": timings}).encode() if status == 200 else b"{}"
    return Answer("classify", status, latency_ms / 1e3, 0.0, None, body)


def sequential(latency_ms: float, model_ms: float) -> dict:
    answers = [answer(200, latency_ms, 1.0, model_ms - 1.0) for _ in range(10)]
    return sequential_summary(summarize(answers, elapsed_s=1.0, budget_ms=BUDGET_MS))


def loop(answered: int, latency_ms: float = 10.0, refused: int = 0) -> dict:
    answers = [answer(200, latency_ms) for _ in range(answered)] + [answer(503, 1.0)] * refused
    return summarize(answers, elapsed_s=1.0, budget_ms=BUDGET_MS)


def test_overhead_is_the_end_to_end_p50_less_the_p50_of_each_answers_model_time():
    answers = [answer(200, 9.0, 1.0, 3.0), answer(200, 10.0, 2.0, 5.0), answer(200, 30.0, 1.0, 2.0)]
    summary = sequential_summary(summarize(answers, elapsed_s=1.0, budget_ms=BUDGET_MS))
    assert summary["server_model_median_ms"] == pytest.approx(4.0)  # of 4, 7, 3
    assert summary["overhead_ms"] == pytest.approx(10.0 - 4.0)


def test_the_median_is_of_the_per_answer_sums_not_a_sum_of_medians():
    answers = [
        answer(200, 10.0, 1.0, 9.0),
        answer(200, 10.0, 9.0, 1.0),
        answer(200, 10.0, 5.0, 2.0),
    ]
    summary = summarize(answers, elapsed_s=1.0, budget_ms=BUDGET_MS)
    assert summary["server_model_median_ms"] == pytest.approx(10.0)  # of 10, 10, 7
    medians = summary["server_median_ms"]
    assert medians["preprocess"] + medians["inference"] == pytest.approx(7.0)


def test_checks_pass_when_every_goal_is_met():
    concurrent = {"on": {"2": loop(40), "8": loop(90)}, "off": {"2": loop(30), "8": loop(30)}}
    verdict = checks(sequential(12.0, 11.0), concurrent, BUDGET_MS)
    assert list(verdict.values()) == [True, True, True, True]
    assert "8 clients: batching on >= 3x the frames/s of batch-1" in verdict


@pytest.mark.parametrize(
    ("seq", "on_top", "off_top", "failed"),
    [
        (sequential(31.0, 30.0), loop(90), loop(30), ("one at a time: p99",)),
        (sequential(12.0, 10.0), loop(90), loop(30), ("one at a time: service overhead",)),
        (sequential(12.0, 11.0), loop(89), loop(30), ("8 clients: batching on >= 3x",)),
        (sequential(12.0, 11.0), loop(90), loop(0), ("8 clients: batching on >= 3x",)),
        (sequential(12.0, 11.0), loop(90, 31.0), loop(30), ("8 clients: batching on p99",)),
        # every request refused: no throughput, and no p99 to be within the budget
        (sequential(12.0, 11.0), loop(0, refused=90), loop(30), ("8 clients:",)),
    ],
)
def test_each_check_fails_on_its_own(seq, on_top, off_top, failed):
    # the lower concurrency misses every goal: only the highest one counts
    concurrent = {"on": {"2": loop(1, 99.0), "8": on_top}, "off": {"2": loop(30), "8": off_top}}
    verdict = checks(seq, concurrent, BUDGET_MS)
    expected = [name for name in verdict if name.startswith(failed)]
    assert expected and [name for name, ok in verdict.items() if not ok] == expected


def test_mean_batch_is_frames_over_batches_between_two_scrapes():
    assert ratio_between((100.0, 50.0), (164.0, 58.0)) == pytest.approx(8.0)
    assert ratio_between((100.0, 50.0), (100.0, 50.0)) is None


def test_concurrency_lists():
    assert positive_ints("64, 16,16") == (16, 64)
    for bad in ("0,16", "x", ","):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_ints(bad)


class Refusing:
    """A Client whose server refuses every request at once."""

    async def send(self, request: Request, scheduled: float | None = None) -> Answer:
        return Answer(request.name, 503, 0.0, 0.0, "1", b"")


def test_a_refused_closed_loop_client_waits_before_sending_again():
    request = Request("classify", "POST", "/v1/classify")

    def timed(pause_s: float) -> float:
        start = time.perf_counter()
        asyncio.run(
            closed_loop(Refusing(), lambda _: request, 1, count=4, pause_after_503_s=pause_s)
        )
        return time.perf_counter() - start

    least_s = 4 * 0.5 * 0.04  # each pause at least half the one asked for
    assert timed(0.0) < least_s <= timed(0.04)


def test_load_loops_start_with_the_heap_frozen():
    """A full collection walking torch's objects in the load generator would delay the sends
    and answers due meanwhile, counted as the server's latency."""
    request = Request("classify", "POST", "/v1/classify")
    loops = (
        lambda: closed_loop(Refusing(), lambda _: request, 1, count=1),
        lambda: open_loop(Refusing(), request, rate_per_s=1000.0, duration_s=0.01),
    )
    for loop in loops:
        gc.unfreeze()
        try:
            asyncio.run(loop())
            assert gc.get_freeze_count() > 10_000
        finally:
            gc.unfreeze()


@pytest.mark.slow
def test_batching_run_against_real_servers(tmp_path: Path):
    out = tmp_path / "batching"
    setting = ["--setting", "RFCLS_MAX_WAIT_MS=2"]
    code = rfcls(["bench", "batching", "--quick", *setting, "--out", str(out)])
    report = json.loads(out.with_suffix(".json").read_text())
    assert code == 0  # a smoke run reports its checks without judging them
    assert report["passed"] == all(report["checks"].values()) and len(report["checks"]) == 4
    assert report["load"]["samples"] == 4096 and report["load"]["concurrency"] == [2, 4]
    assert report["settings"]["on"]["max_batch"] == 16
    assert report["settings"]["off"]["max_batch"] == 1
    assert report["given_settings"] == {"RFCLS_MAX_WAIT_MS": "2"}
    assert report["model"]["precision"] in {"float32", "bfloat16"}  # as /v1/model said
    assert {report["settings"][mode]["max_wait_ms"] for mode in ("on", "off")} == {2.0}
    sequential = report["one_at_a_time"]
    assert sequential["answered_ok"] == report["load"]["requests"] == 20
    assert 0 < sequential["server_model_median_ms"] < sequential["p50_ms"] <= sequential["p99_ms"]
    for mode in ("on", "off"):
        for clients in ("2", "4"):
            r = report["concurrent"][mode][clients]
            assert r["answered_ok"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"]
            assert r["mean_batch"] >= 1.0
            assert 0 <= r["server_within_budget"] <= 1
            estimate = r["engine_estimate_ms"]
            assert estimate["fixed"] >= 0 and estimate["per_frame"] >= 0
            assert estimate["fixed"] + estimate["per_frame"] > 0  # fitted from real batches
            assert estimate["close"] >= report["settings"][mode]["max_queue_wait_ms"] > 0
    # batch-1 serving really ran one frame per batch
    assert {r["mean_batch"] for r in report["concurrent"]["off"].values()} == {1.0}
    assert set(report["throughput_ratio"]) == {"2", "4"}
    md = out.with_suffix(".md").read_text()
    assert md.startswith("# Dynamic batching (cpu)") and "| on | 4 |" in md and "| off | 2 |" in md
    assert "default settings but RFCLS_MAX_WAIT_MS=2 (1 worker process(es)" in md
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
