"""`rfcls bench SUITE`: the suites are wired, and the spectra suite runs through it."""

from __future__ import annotations

import argparse
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


def test_a_quick_run_never_writes_over_a_committed_report():
    from benchmarks.cli import DOCS, QUICK_RUNS, report_out

    quick = argparse.Namespace(out=None, quick=True)
    full = argparse.Namespace(out=None, quick=False)
    given = argparse.Namespace(out=Path("/tmp/x"), quick=True)
    assert report_out(quick, "backends", "cpu") == QUICK_RUNS / "backends-cpu"
    assert report_out(full, "backends", "cpu") == DOCS / "backends-cpu"
    assert (DOCS / "backends-cpu.json").is_file()  # the committed report the quick run spares
    assert report_out(given, "backends", "cpu") == Path("/tmp/x")
