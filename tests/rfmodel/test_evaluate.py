"""`rfcls evaluate`: metrics against an independent count, and the files it writes."""

import json

import numpy as np
import pytest
import torch

from preprocessing.features import FeatureConfig
from rfmodel.bundle import model_config_for, save_bundle
from rfmodel.classifier import RFClassifier
from rfmodel.data import CLASSES
from rfmodel.evaluate import EVAL_SEED, EvaluateError, display_names, score
from service.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_score_matches_an_explicit_count():
    rng = np.random.default_rng(0)
    classes = ("a", "b", "c")
    labels = rng.integers(0, 3, 300)
    predicted = np.where(rng.random(300) < 0.6, labels, rng.integers(0, 3, 300))
    snr = rng.choice([-5.0, 0.0, 10.0, 20.0], 300)
    snr[labels == 0] = np.nan  # class 0 plays noise: no SNR
    metrics = score(labels, snr, predicted, classes)

    counts = np.zeros((3, 3), int)
    for t, p in zip(labels, predicted, strict=True):
        counts[t, p] += 1
    assert metrics["confusion_matrix"]["counts"] == counts.tolist()
    assert metrics["accuracy"] == pytest.approx(np.trace(counts) / 300)
    for c, name in enumerate(classes):
        row = metrics["per_class"][name]
        assert row["count"] == int((labels == c).sum())
        assert row["accuracy"] == pytest.approx(counts[c, c] / counts[c].sum())
        assert row["precision"] == pytest.approx(counts[c, c] / counts[:, c].sum())
    signal = labels != 0
    for value in (-5.0, 0.0, 10.0, 20.0):
        chosen = signal & (snr == value)
        got = metrics["accuracy_by_snr"][f"{value:g}"]
        assert got["count"] == chosen.sum()
        assert got["accuracy"] == pytest.approx((labels == predicted)[chosen].mean())
    high = signal & (snr >= 10)
    summary = metrics["summary"]
    assert summary["accuracy_snr_ge_10db"] == pytest.approx((labels == predicted)[high].mean())
    assert summary["accuracy_snr_0db"] == metrics["accuracy_by_snr"]["0"]["accuracy"]
    assert summary["accuracy_overall"] == metrics["accuracy"]
    high_counts = np.zeros((3, 3), int)
    for t, p in zip(labels[high], predicted[high], strict=True):
        high_counts[t, p] += 1
    assert metrics["confusion_matrix_snr_ge_10db"]["counts"] == high_counts.tolist()


@pytest.fixture
def tiny_bundles(tmp_path):
    features = FeatureConfig(nfft=32, hop=32)
    paths = []
    for seed, backend in enumerate(("mha", "latte")):
        torch.manual_seed(seed)
        # with a recording head over both views, as the shipped models: evaluation feeds it
        cfg = model_config_for(
            features,
            len(CLASSES),
            d_model=16,
            n_layers=1,
            n_heads=2,
            n_latents=4,
            attn_backend=backend,
        )
        path = tmp_path / "models" / f"{backend}-rmsnorm"
        paths.append(save_bundle(path, RFClassifier(cfg), features, CLASSES))
    return paths


def test_evaluate_writes_metrics_and_plots(tmp_path, tiny_bundles):
    out = tmp_path / "eval"
    snr = (-10.0, 0.0, 10.0, 20.0)
    argv = ["evaluate", *map(str, tiny_bundles), "--n-per-class", "8", "--samples", "1024"]
    argv += [
        "--snr=" + ",".join(map(str, snr)),
        "--seed",
        "7",
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    results = json.loads((out / "metrics.json").read_text())
    assert set(results) == {"mha-rmsnorm", "latte-rmsnorm"}
    n_examples = 8 * len(CLASSES)
    for path in tiny_bundles:
        metrics = results[path.name]
        # another set than the held-out one leaves the bundle's own figures alone
        assert not (path / "metrics.json").exists()
        assert metrics["n_examples"] == n_examples
        assert metrics["eval_set"]["seed"] == 7 and metrics["eval_set"]["snr_values"] == list(snr)
        counts = np.array(metrics["confusion_matrix"]["counts"])
        assert counts.shape == (len(CLASSES), len(CLASSES)) and counts.sum() == n_examples
        assert metrics["confusion_matrix"]["classes"] == list(CLASSES)
        assert all(v["count"] == 8 for v in metrics["per_class"].values())
        # each signal class's 8 examples cycle through the 4 SNRs; noise has none
        assert [v["count"] for v in metrics["accuracy_by_snr"].values()] == [2 * 13] * 4
        assert 0 <= metrics["accuracy"] <= 1
        assert set(metrics["summary"]) == {
            "accuracy_overall",
            "accuracy_snr_ge_10db",
            "accuracy_snr_0db",
        }
        assert all(0 <= v <= 1 for v in metrics["summary"].values())
        calibration = metrics["calibration"]
        assert sum(b["count"] for b in calibration["bins"]) == n_examples
        assert 0 <= calibration["expected_calibration_error"] <= 1
        # the binned accuracies average back to the accuracy
        hits = sum(b["accuracy"] * b["count"] for b in calibration["bins"])
        assert hits / n_examples == pytest.approx(metrics["accuracy"])
        assert (out / f"confusion_{path.name}.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "accuracy_vs_snr.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "reliability.png").read_bytes()[:8] == PNG_MAGIC

    # deterministic: a second run gives the same numbers
    assert main(argv) == 0
    assert json.loads((out / "metrics.json").read_text()) == results


def test_the_held_out_set_writes_each_bundles_metrics(tmp_path, tiny_bundles):
    out = tmp_path / "eval"
    argv = ["evaluate", *map(str, tiny_bundles), "--n-per-class", "2", "--out", str(out)]
    assert main([*argv, "--device", "cpu"]) == 0
    results = json.loads((out / "metrics.json").read_text())
    for path in tiny_bundles:
        # the directory's copy names no path (it moves with the directory); the run's does
        written = json.loads((path / "metrics.json").read_text())
        assert "path" not in written["model"]
        assert results[path.name]["model"]["path"] == str(path)
        results[path.name]["model"].pop("path")
        assert written == results[path.name]
        assert results[path.name]["eval_set"]["seed"] == EVAL_SEED


def test_a_smaller_run_keeps_the_metrics_of_a_larger_one(tmp_path, tiny_bundles):
    """A quick look at a shipped model (fewer examples per class) must not replace its figures."""
    kept, written = tiny_bundles
    recorded = {"eval_set": {"seed": EVAL_SEED, "n_per_class": 400}, "summary": {}}
    (kept / "metrics.json").write_text(json.dumps(recorded))
    out = tmp_path / "eval"
    argv = ["evaluate", str(kept), str(written), "--n-per-class", "2", "--out", str(out)]
    assert main([*argv, "--device", "cpu"]) == 0
    assert json.loads((kept / "metrics.json").read_text()) == recorded
    results = json.loads((out / "metrics.json").read_text())
    results[written.name]["model"].pop("path")
    assert json.loads((written / "metrics.json").read_text()) == results[written.name]


def test_display_names_tell_every_model_apart(tmp_path):
    """They key the results and name the plots' files: two alike would overwrite each other."""
    paths = [tmp_path / "x/run1/mha-rmsnorm", tmp_path / "y/run1/mha-rmsnorm", tmp_path / "gqa"]
    assert display_names(paths) == ["x/run1/mha-rmsnorm", "y/run1/mha-rmsnorm", "gqa"]
    with pytest.raises(EvaluateError, match="model_dirs: a directory is given twice"):
        display_names([tmp_path / "gqa", tmp_path / "x/../gqa"])


def test_evaluate_reports_a_missing_model_dir(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nothing"), "--out", str(tmp_path / "eval")]) == 2
    assert "config.json" in capsys.readouterr().err


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, tiny_bundles, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("rfmodel.evaluate.make_eval_set", interrupted)
    argv = ["evaluate", str(tiny_bundles[0]), "--out", str(tmp_path / "eval"), "--device", "cpu"]
    assert main(argv) == 130
    assert capsys.readouterr().err == "rfcls evaluate: interrupted\n"


@pytest.mark.parametrize(
    "option", [("--samples", "10"), ("--samples", "99999999999"), ("--snr=nan",), ("--seed", "-1")]
)
def test_evaluate_options_are_checked_when_parsed(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", str(tmp_path), *option])
    assert (
        exit_.value.code == 2 and f"argument {option[0].split('=')[0]}" in capsys.readouterr().err
    )


def test_an_out_that_cannot_be_a_directory_is_one_line_exit_2(tmp_path, tiny_bundles, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    argv = ["evaluate", str(tiny_bundles[0]), "--out", str(blocker / "sub"), "--device", "cpu"]
    assert main(argv) == 2
    assert "Not a directory" in capsys.readouterr().err
