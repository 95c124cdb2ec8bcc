"""The overload and soak scripts end to end on short runs against a real `rfcls serve`: they
write their JSON, markdown and chart, every request is answered, and the server's counters equal
the client's. (Latency checks are left to the full runs: they depend on the machine.)"""

from __future__ import annotations

import json

import pytest

from benchmarks import overload, soak
from benchmarks.load import Answer, quantile
from service.metrics import REJECTION_REASONS
from service.protocol.instrumentation import route_label


def test_quantile_is_the_nearest_rank():
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert [quantile(values, q) for q in (0.2, 0.5, 0.99, 1.0)] == [1.0, 3.0, 5.0, 5.0]
    assert quantile([], 0.5) is None


def answer(status: int, latency_s: float = 0.005, late_s: float = 0.001) -> Answer:
    retry_after = "1" if status == 503 else None
    return Answer("classify", status, latency_s, late_s, retry_after, b"")


def test_overload_checks_judge_the_generator_by_lateness_and_refuse_an_all_refused_run():
    on_time = [answer(200)] * 90 + [answer(503)] * 10
    checks = overload.judge(on_time, None, budget_ms=30.0, growth_mib=1.0, counts_agree=True)
    assert all(checks.values()), checks  # however many arrivals the Poisson draw made
    late = [answer(200, late_s=0.05)] * 100
    checks = overload.judge(late, None, budget_ms=30.0, growth_mib=1.0, counts_agree=True)
    assert not checks["load generator kept up (p99 send lateness <= 10 ms)"]
    # nothing admitted is no evidence that admitted requests meet the budget
    refused = [answer(503)] * 100
    checks = overload.judge(refused, None, budget_ms=30.0, growth_mib=1.0, counts_agree=True)
    assert not checks["admitted p99 within the budget"]


def test_every_soak_request_is_a_classification_with_a_known_refusal_reason():
    for kind in soak.mix():
        assert route_label(kind.request.target.split("?")[0]) is not None, kind.request.name
        assert (kind.status == 200) == (kind.reason is None) == (kind.frames > 0)
        assert kind.reason is None or kind.reason in REJECTION_REASONS


def outputs(out):
    report = json.loads(out.with_suffix(".json").read_text())
    assert out.with_suffix(".md").read_text().startswith("# ")
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    return report


@pytest.mark.slow
def test_a_short_soak_passes(tmp_path):
    out = tmp_path / "soak"
    assert soak.main(["--requests", "300", "--concurrency", "2", "--out", str(out)]) == 0
    report = outputs(out)
    assert report["requests"] == 300 and report["passed"] and not report["mismatched_counters"]
    assert sum(k["sent"] for k in report["mix"]) == 300


@pytest.mark.slow
def test_a_short_overload_answers_everything_and_counts_agree(tmp_path):
    out = tmp_path / "overload"
    overload.main(["--capacity", "40", "--duration", "2", "--out", str(out)])
    report = outputs(out)
    assert report["unanswered"] == 0 and not report["capacity_measured"]
    assert report["checks"]["server counts equal client counts"]


@pytest.mark.slow
def test_a_measured_capacity_is_the_admitted_rate_of_its_closed_loop(tmp_path):
    out = tmp_path / "overload"
    overload.main(["--capacity-duration", "1", "--duration", "1", "--out", str(out)])
    report = outputs(out)
    assert report["capacity_measured"] and report["unanswered"] == 0
    by_status = report["capacity_answers_by_status"]
    assert report["capacity_per_s"] == pytest.approx(by_status.get("200", 0), abs=0.1)
    admitted_share = by_status.get("200", 0) / sum(by_status.values())
    (check,) = (v for k, v in report["checks"].items() if k.startswith("capacity phase admitted"))
    assert check == (admitted_share >= overload.CAPACITY_ADMITTED_SHARE)
    assert report["checks"]["server counts equal client counts"]
