"""`rfcls bench backends`: a quick run on tiny lengths writes a complete report; points that run
out of time or memory are rows that say so; bad arguments are refused naming the option."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.backends import progress_line, token_counts
from benchmarks.models import shipped_weights
from benchmarks.report import goals_table, growth
from service.cli import main as rfcls

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUICK = ["bench", "backends", "--quick", "--sizes", "default"]


def bench(tmp_path: Path, *extra: str) -> tuple[dict, str]:
    out = tmp_path / "backends"
    assert rfcls([*QUICK, "--out", str(out), *extra]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    return report, out.with_suffix(".md").read_text()


def test_quick_run_writes_json_markdown_and_charts(tmp_path: Path):
    report, md = bench(tmp_path, "--backends", "flash,latent")
    models = {(p["model"], p["tokens"]) for p in report["points"]}
    assert models == {(m, t) for m in ("flash", "latent", "flash-layernorm") for t in (32, 64)}
    for point in report["points"]:
        assert point["status"] == "ok", point
        assert point["latency"]["repeats"] >= 3
        assert 0 < point["latency"]["p50_ms"] <= point["latency"]["p99_ms"]
        assert point["throughput_per_s"] > 0 and point["batch"] >= 1
        assert point["kv_mb"] == pytest.approx(point["batch"] * point["kv_mb_per_recording"])
    budget = report["budget_search"]["latent"]
    assert budget["status"] == "ok" and budget["default_tokens"] == 31
    for model, accuracy in report["accuracy"].items():
        backend, _, norm = model.partition("-")
        expected = "ok" if shipped_weights(backend, norm or "rmsnorm") else "not available"
        assert accuracy["status"].startswith(expected)
    assert report["hardware"]["cpu_model"] and report["versions"]["torch"] == torch.__version__
    for name in report["charts"]:
        assert (tmp_path / name).read_bytes().startswith(PNG_MAGIC)
    assert {"backends-throughput.png", "backends-time-vs-length.png"} <= set(report["charts"])
    for heading in ("## default size", "## Growth", "## Accuracy", "## RMSNorm vs LayerNorm"):
        assert heading in md
    assert "| latent | 64 | ok |" in md
    pairs = report["norm_pairs"]
    assert [(p["size"], p["tokens"], p["status"]) for p in pairs] == [
        ("default", 32, "ok"),
        ("default", 64, "ok"),
    ]
    assert pairs[0]["layernorm_over_rmsnorm"] == pytest.approx(
        pairs[0]["p50_ms"]["layernorm"] / pairs[0]["p50_ms"]["rmsnorm"]
    )
    assert "backends-norms.png" in report["charts"]


def test_a_point_over_the_time_limit_is_a_row_and_longer_lengths_are_not_run(tmp_path: Path):
    report, md = bench(tmp_path, "--backends", "latent", "--point-time-limit", "0.01")
    first, second = [p for p in report["points"] if p["model"] == "latent"]
    assert first["status"] == second["status"] == "time limit"
    assert "no result within 0.01 s" in first["detail"]
    assert "not run" in second["detail"]
    assert "| latent | 32 | **time limit**" in md


class CutOff(Exception):
    """A device call's time limit, arriving during the budget search."""


def cut(*_):
    raise CutOff


def cut_off_run(out: Path, monkeypatch) -> tuple[list[str], dict]:
    """A flash,latent run cut off in the budget search: its arguments and partial report."""
    import benchmarks.backends as backends

    args = [*QUICK, "--out", str(out), "--backends", "flash,latent"]
    monkeypatch.setattr(backends, "measure_budget_search", cut)
    with pytest.raises(CutOff):
        rfcls(args)
    monkeypatch.undo()
    return args, json.loads(out.with_suffix(".json").read_text())


def test_a_run_cut_off_keeps_its_measurements_and_resume_goes_on(
    tmp_path: Path, monkeypatch, capsys
):
    import benchmarks.backends as backends

    out = tmp_path / "backends"
    args, partial = cut_off_run(out, monkeypatch)
    assert partial["partial"] is True and "charts" not in partial
    assert len(partial["points"]) == 6 and len(partial["norm_pairs"]) == 2
    assert partial["budget_search"] == {} and partial["accuracy"] == {}
    md = out.with_suffix(".md").read_text()
    assert "**Partial:**" in md and "| latent | 64 | ok |" in md and "(not finished)" in md

    # resumed: nothing measured before is measured again, and the report is whole
    monkeypatch.setattr(backends, "measure_sweep_point", cut)
    monkeypatch.setattr(backends, "measure_norm_pair_at", cut)
    assert rfcls([*args, "--resume"]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert "partial" not in report and report["points"] == partial["points"]
    assert report["norm_pairs"] == partial["norm_pairs"]
    assert report["budget_search"]["latent"]["status"] == "ok"
    assert set(report["accuracy"]) == {"flash", "latent", "flash-layernorm"}
    assert report["resumed"]["command"] == partial["command"]
    assert report["charts"] and "**Resumed:**" in out.with_suffix(".md").read_text()

    # a finished report is not resumed, nor one of another sweep
    assert rfcls([*args, "--resume"]) == 2
    assert "is a finished report" in capsys.readouterr().err
    partial["lengths"] = [32, 128]
    out.with_suffix(".json").write_text(json.dumps(partial))
    assert rfcls([*args, "--resume"]) == 2
    assert "is of another sweep (its lengths differs)" in capsys.readouterr().err
    # nor one measured on another kind of machine: its rows' ratios would compare two
    partial["lengths"] = report["lengths"]
    partial["hardware"]["cpu_model"] = "another CPU"
    out.with_suffix(".json").write_text(json.dumps(partial))
    assert rfcls([*args, "--resume"]) == 2
    assert "was measured on another CPU" in capsys.readouterr().err


def test_a_resume_with_fewer_backends_keeps_the_others_rows(tmp_path: Path, monkeypatch, capsys):
    import benchmarks.backends as backends

    out = tmp_path / "backends"
    args, partial = cut_off_run(out, monkeypatch)
    monkeypatch.setattr(backends, "measure_sweep_point", cut)
    latent_only = [*args[: args.index("--backends")], "--backends", "latent"]
    assert rfcls([*latent_only, "--resume"]) == 0
    report = json.loads(out.with_suffix(".json").read_text())

    def rows(report: dict) -> list:
        return sorted(report["points"], key=lambda row: (row["model"], row["tokens"]))

    assert rows(report) == rows(partial) and report["norm_pairs"] == partial["norm_pairs"]
    assert "| flash | 64 | ok |" in out.with_suffix(".md").read_text()
    # nor is a compiled sweep resumed by an eager one: its rows would mix the two
    partial["compile"] = True
    out.with_suffix(".json").write_text(json.dumps(partial))
    assert rfcls([*latent_only, "--resume"]) == 2
    assert "is of another sweep (its compile differs)" in capsys.readouterr().err


def test_progress_takes_an_earlier_entry_at_any_depth_and_measures_the_rest(
    tmp_path: Path, monkeypatch
):
    import benchmarks.backends as backends

    saved = []
    monkeypatch.setattr(backends, "write_report_files", lambda report, out: saved.append(out))
    earlier = {"matmul_peak": {"tflops": 789.0}, "budget_search": {"mha": {"status": "ok"}}}
    report = {"matmul_peak": None, "budget_search": {}, "accuracy": {}, "points": []}
    progress = backends.Progress(report, tmp_path / "r", earlier)
    measured = []

    def measure(name: str):
        return lambda: measured.append(name) or {"status": name}

    progress.entry(measure("peak"), "matmul_peak")
    progress.entry(measure("mha"), "budget_search", "mha")
    progress.entry(measure("gqa"), "budget_search", "gqa")
    assert measured == ["gqa"]
    assert report["matmul_peak"] == {"tflops": 789.0}
    assert report["budget_search"] == {"mha": {"status": "ok"}, "gqa": {"status": "gqa"}}
    assert saved == [tmp_path / "r"] * 3  # after every entry


def test_a_point_out_of_memory_is_a_row(tmp_path: Path):
    report, md = bench(tmp_path, "--backends", "gqa", "--memory-limit-mb", "1")
    first, second = report["points"][:2]
    assert first["status"] == "out of memory", first
    assert "not run: out of memory already at 32 tokens" in second["detail"]
    assert "| gqa | 32 | **out of memory**" in md


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lengths", "1k,lots"], "--lengths: 'lots' is not a token count"),
        (["--lengths", "0"], "--lengths: '0': a token count must be at least 1"),
        (["--backends", "mha,bogus"], "--backends: unknown backend ['bogus']; valid: mha, flash"),
        (["--sizes", "huge"], "--sizes: unknown size ['huge']; valid: default, reference"),
        (["--max-batch", "0"], "--max-batch: 0 is not a positive integer"),
    ],
)
def test_bad_arguments_name_the_option(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        rfcls(["bench", "backends", *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_non_positive_time_limit_is_refused(tmp_path: Path, capsys):
    assert rfcls([*QUICK, "--out", str(tmp_path / "x"), "--point-time-limit", "0"]) == 2
    assert "point-time-limit: must be > 0" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU-only machine")
def test_cuda_without_a_gpu_is_refused(tmp_path: Path, capsys):
    assert rfcls([*QUICK, "--out", str(tmp_path / "x"), "--device", "cuda"]) == 2
    assert "device: cuda was asked for but torch sees no CUDA device" in capsys.readouterr().err


def test_token_counts_accept_k_suffixes():
    assert token_counts("2k, 1k,4096,1k") == (1024, 2048, 4096)


def test_growth_slope_is_one_for_linear_and_two_for_quadratic_time():
    def points(power: int) -> list[dict]:
        return [{"tokens": t, "throughput_per_s": 1e6 / t**power} for t in (1024, 4096, 16384)]

    assert growth(points(1))["slope"] == pytest.approx(1.0)
    quadratic = growth(points(2))
    assert quadratic["slope"] == pytest.approx(2.0)
    assert quadratic["time_ratio"] == pytest.approx(256.0)
    assert growth(points(1)[:1]) is None


def reference_point(model: str, tokens: int, rate: float, p50_ms: float, **extra) -> dict:
    return {
        "size": "reference",
        "model": model,
        "tokens": tokens,
        "status": "ok",
        "throughput_per_s": rate,
        "latency": {"p50_ms": p50_ms},
        **extra,
    }


def test_gpu_goals_are_judged_from_the_points_taking_the_faster_mode():
    points = [
        # latent: 10.5k/s at 4k only through torch.compile replayed from a CUDA graph; linear
        # growth (16x from 1k to 16k)
        reference_point("latent", 1024, 16_000, 3.0),
        reference_point(
            "latent",
            4096,
            4_000,
            4.0,
            compiled={
                "status": "ok",
                "throughput_per_s": 9_700.0,
                "graphed": {"status": "ok", "throughput_per_s": 10_500.0},
            },
        ),
        reference_point("latent", 16384, 1_000, 4.0),
        # flash: 2,000/s at 4k misses 3,000; its CUDA graph brings batch 1 under 2 ms
        reference_point(
            "flash", 4096, 2_000, 3.0, latency_cuda_graph={"status": "ok", "p50_ms": 0.8}
        ),
        reference_point("flash", 16384, 200, 8.0),
        # gqa: its CUDA graph misses 2 ms, the graph of its compiled stages does not
        reference_point(
            "gqa",
            4096,
            2_000,
            3.0,
            latency_cuda_graph={"status": "ok", "p50_ms": 2.1},
            latency_compiled_graph={"status": "ok", "p50_ms": 1.5},
        ),
        # latte: quadratic-looking growth, 64x
        reference_point("latte", 1024, 6_400, 3.0),
        reference_point("latte", 16384, 100, 3.0),
    ]
    report = {"device": "cuda:0", "points": points}
    verdicts = {
        row.split(" | ")[0].lstrip("| "): row.rsplit(" | ", 1)[1].rstrip(" |")
        for row in goals_table(report)
        if row.startswith("| ") and not row.startswith(("| goal", "| ---"))
    }
    assert verdicts == {
        "latent at 4k tokens >= 10,000 recordings/s": "met",
        "latent at 16k tokens >= 6x flash": "**not met**",  # 1,000 / 200 = 5x
        "flash at 4k tokens >= 3,000 recordings/s": "**not met**",
        "flash: batch-1 p50 at 4k tokens < 2 ms": "met",
        "gqa: batch-1 p50 at 4k tokens < 2 ms": "met",
        "latent: batch-1 p50 at 4k tokens < 2 ms": "**not met**",
        "latent: time 1k -> 16k tokens <= 20x": "met",
        "latte: time 1k -> 16k tokens <= 20x": "**not met**",
    }
    latent_row = next(row for row in goals_table(report) if "latent at 4k" in row)
    assert "10,500.0/s (torch.compile, CUDA graph)" in latent_row
    assert goals_table({"device": "cpu", "points": points}) == []


def test_the_progress_line_carries_every_gpu_figure():
    # a sweep cut off before its report leaves only these lines: they must hold what it measured
    point = reference_point(
        "flash",
        4096,
        2_000,
        3.0,
        latency_cuda_graph={"status": "ok", "p50_ms": 0.81},
        latency_compiled_graph={"status": "ok", "p50_ms": 0.62},
        compiled={
            "status": "ok",
            "throughput_per_s": 3_500.0,
            "compile_s": 21.0,
            "graphed": {"status": "ok", "throughput_per_s": 3_612.5},
        },
        attention_tflops=123.45,
        batch=2048,
    )
    point["latency"]["p99_ms"] = 3.5
    line = progress_line(point)
    assert "p50 3.0 ms" in line and "2000.0/s at batch 2048" in line
    assert "graph p50 0.81 ms" in line and "compiled graph p50 0.62 ms" in line
    assert "compiled 3,500.0 (compile 21 s); CUDA graph 3,612.5" in line
    point["compiled"] |= {"batch": 1024, "halved_because": ["out of memory at batch 2048"]}
    assert "3,500.0 (compile 21 s) at batch 1024: out of memory at batch 2048;" in progress_line(
        point
    )
    assert "attention 123.5 TFLOP/s" in line
