"""`rfcls bench service`: the real server in a subprocess under closed-loop and Poisson load, and
the summary of the answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.load import Answer
from benchmarks.service_load import summarize
from service.cli import main as rfcls


def answer(status: int, latency_ms: float, late_ms: float = 0.0) -> Answer:
    timings = {"queue": 1.0, "preprocess": 2.0, "inference": 3.0, "total": 6.0}
    body = json.dumps({"timings_ms": timings}).encode() if status == 200 else b"{}"
    return Answer("classify", status, latency_ms / 1e3, late_ms / 1e3, None, body)


def test_summary_counts_latency_from_the_scheduled_time_and_only_answered_requests():
    answers = [answer(200, 10.0), answer(200, 20.0, late_ms=15.0), answer(503, 1.0)]
    summary = summarize(answers, elapsed_s=2.0, budget_ms=30.0)
    assert summary["requests"] == 3 and summary["answered_ok"] == 2
    assert summary["statuses"] == {"200": 2, "503": 1}
    assert summary["throughput_per_s"] == pytest.approx(1.0)
    assert summary["p99_ms"] == pytest.approx(35.0)  # 20 ms answer sent 15 ms late
    assert summary["within_budget"] == pytest.approx(0.5)
    assert summary["ok_within_budget_of_all"] == pytest.approx(1 / 3)  # the refusal counts
    assert summary["server_median_ms"]["inference"] == pytest.approx(3.0)


def test_service_run_against_the_real_server(tmp_path: Path):
    out = tmp_path / "service"
    args = ["--backends", "latent", "--duration", "0.5", "--concurrency", "1"]
    args += ["--setting", "RFCLS_EXTRA_WARMUP_SAMPLES=2048"]
    assert rfcls(["bench", "service", "--out", str(out), *args]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    latent = report["backends"]["latent"]
    for phase in ("closed_loop", "poisson"):
        assert latent[phase]["answered_ok"] > 0
        assert 0 < latent[phase]["p50_ms"] <= latent[phase]["p99_ms"]
        assert latent[phase]["client_cpu_share"] > 0
    assert latent["poisson"]["rate_per_s"] == pytest.approx(
        0.7 * latent["closed_loop"]["throughput_per_s"]
    )
    assert report["given_settings"] == {"RFCLS_EXTRA_WARMUP_SAMPLES": "2048"}
    md = out.with_suffix(".md").read_text()
    assert "| latent |" in md and "default settings but RFCLS_EXTRA_WARMUP_SAMPLES=2048" in md
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")


def test_bad_service_arguments_name_the_option(capsys):
    with pytest.raises(SystemExit):
        rfcls(["bench", "service", "--poisson-load", "-1"])
    assert "--poisson-load: -1 is not a positive finite number" in capsys.readouterr().err
