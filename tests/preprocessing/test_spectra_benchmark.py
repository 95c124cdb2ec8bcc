import json

from benchmarks.spectra_throughput import main


def test_benchmark_writes_report(tmp_path):
    out = tmp_path / "spectra"
    argv = ["--batch", "2", "--samples", "2048", "--repeats", "2", "--threads", "1", "--out"]
    assert main([*argv, str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    names = {r["name"] for r in report["results"]}
    assert "power_spectra" in names and "scipy ShortTimeFFT.spectrogram" in names
    assert all(r["msps"] > 0 and r["repeats"] == 2 for r in report["results"])
    assert report["scipy_relative_l1_difference"] < 1e-5
    assert report["versions"]["torch"] and report["hardware"]["cpu_model"]
    assert "| power_spectra | 1 |" in out.with_suffix(".md").read_text()
