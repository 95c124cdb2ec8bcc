"""`rfcls bench SUITE`: the suites are wired, and the spectra suite runs through it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from service.cli import main as rfcls


def test_bench_needs_a_suite(capsys):
    with pytest.raises(SystemExit) as exc:
        rfcls(["bench"])
    assert exc.value.code == 2
    assert "SUITE" in capsys.readouterr().err


def test_spectra_suite_quick_run(tmp_path: Path):
    out = tmp_path / "spectra"
    assert rfcls(["bench", "spectra", "--quick", "--threads", "1", "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["input"]["samples_per_recording"] == 1 << 14
    assert {r["repeats"] for r in report["results"]} == {3}
    assert "# Spectra throughput (cpu)" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize(
    "suite", ["backends", "service", "batching", "spectra", "overload", "soak", "fuzz"]
)
def test_every_suite_has_its_help(suite, capsys):
    with pytest.raises(SystemExit) as exc:
        rfcls(["bench", suite, "--help"])
    assert exc.value.code == 0
    assert f"rfcls bench {suite}" in capsys.readouterr().out


def test_a_suite_whose_dependency_is_missing_says_so_and_spares_the_others(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "schemathesis", None)  # import schemathesis now fails
    monkeypatch.delitem(sys.modules, "benchmarks.fuzz_api", raising=False)
    assert rfcls(["bench", "fuzz"]) == 2
    assert "needs schemathesis" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        rfcls(["bench", "spectra", "--help"])
    assert exc.value.code == 0
