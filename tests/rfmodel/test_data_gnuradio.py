"""The GNU Radio reference set (run by Debian's python3 when it has GNU Radio) and the script that
scores models on it."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from sigmf import sigmffile

from preprocessing.features import FeatureConfig
from rfmodel.bundle import save_bundle
from rfmodel.classifier import RFClassifier
from rfmodel.config import ModelConfig
from rfmodel.data import CLASSES, gnuradio_eval, make_eval_set

SCRIPT = Path(__file__).resolve().parents[2] / "rfmodel" / "data" / "gnuradio_reference.py"
DEBIAN_PYTHON = "/usr/bin/python3"


def has_gnuradio() -> bool:
    if not shutil.which(DEBIAN_PYTHON):
        return False
    probe = subprocess.run([DEBIAN_PYTHON, "-c", "import gnuradio.digital"], capture_output=True)
    return probe.returncode == 0


@pytest.fixture
def tiny_bundle(tmp_path):
    torch.manual_seed(0)
    features = FeatureConfig(nfft=32, hop=32, recording_segment=0)
    cfg = ModelConfig(
        n_features=features.n_features, n_classes=len(CLASSES), d_model=16, n_layers=1, n_heads=2
    )
    return save_bundle(tmp_path / "model", RFClassifier(cfg), features, CLASSES)


def write_reference_like(path, classes, per_class, n_samples):
    """A file in the reference set's format (here filled from rfmodel.data)."""
    iq, labels, snr = make_eval_set(3, per_class, n_samples, (0.0, 20.0), classes)
    names = np.asarray([classes[i] for i in labels])
    np.savez(path, iq=iq, label=names, snr_db=snr, params=np.asarray(["{}"] * len(iq)))


def test_gnuradio_eval_scores_both_sets(tmp_path, tiny_bundle, capsys):
    data = tmp_path / "ref.npz"
    write_reference_like(data, ("noise", "bpsk", "fm"), per_class=4, n_samples=1024)
    out = tmp_path / "scores.json"
    assert (
        gnuradio_eval.main([str(data), str(tiny_bundle), "--out", str(out), "--device", "cpu"]) == 0
    )
    scores = json.loads(out.read_text())["model"]
    for set_name in ("gnuradio", "rfmodel.data"):
        metrics = scores[set_name]
        assert metrics["n_examples"] == 12
        counts = {name: entry["count"] for name, entry in metrics["per_class"].items()}
        assert counts == {name: (4 if name in ("noise", "bpsk", "fm") else 0) for name in CLASSES}
        assert set(metrics["accuracy_by_snr"]) == {"0", "20"}
    assert "accuracy_overall" in capsys.readouterr().out


def test_gnuradio_eval_rejects_unknown_labels(tmp_path, tiny_bundle, capsys):
    data = tmp_path / "ref.npz"
    iq = np.zeros((1, 1024), np.complex64)
    np.savez(data, iq=iq, label=np.asarray(["psk"]), snr_db=np.zeros(1, np.float32))
    assert gnuradio_eval.main([str(data), str(tiny_bundle), "--device", "cpu"]) == 2
    assert "label" in capsys.readouterr().err


@pytest.mark.skipif(not has_gnuradio(), reason="Debian python3 with GNU Radio not installed")
def test_gnuradio_reference_set(tmp_path):
    out = tmp_path / "gr" / "eval"
    classes = ("noise", "qpsk", "gmsk", "ofdm", "bpsk", "8psk")
    command = [
        DEBIAN_PYTHON,
        str(SCRIPT),
        "--out",
        str(out),
        "--per-cell",
        "1",
        "--samples",
        "2048",
    ]
    subprocess.run([*command, "--classes", ",".join(classes)], check=True, capture_output=True)
    with np.load(out.with_suffix(".npz")) as data:
        iq, labels, snr = data["iq"], data["label"], data["snr_db"]
        params = [json.loads(p) for p in data["params"]]
    n_snr = 8
    assert iq.shape == (len(classes) * n_snr, 2048) and iq.dtype == np.complex64
    assert np.isfinite(iq).all() and (np.abs(iq) > 0).any(axis=1).all()
    assert [str(x) for x in labels] == [c for c in classes for _ in range(n_snr)]
    assert np.isnan(snr[labels == "noise"]).all()
    assert sorted(snr[labels == "qpsk"].tolist()) == [-10, -5, 0, 5, 10, 15, 20, 30]
    for label, p in zip(labels, params, strict=True):
        if label != "noise":
            assert 0 < p["bandwidth"] < 0.8 and abs(p["cfo"]) <= 0.1
    # the signal fills the whole recording: no start-up silence of the modulator's filters (at
    # 32 samples per symbol its RRC delays the output by about 5,600 samples)
    for x, label, value in zip(iq, labels, snr, strict=True):
        if label != "noise" and value >= 20:
            quarters = np.mean(np.abs(x.reshape(4, -1)) ** 2, axis=1)
            assert quarters.min() > 0.2 * quarters.mean(), (label, value, quarters)
    # the SigMF copy passes the sigmf package's schema and holds the same samples, one
    # annotation per recording
    recording = sigmffile.fromfile(str(out.with_suffix(".sigmf-meta")))
    recording.validate()
    np.testing.assert_array_equal(recording.read_samples().reshape(iq.shape), iq)
    assert [a["core:label"] for a in recording.get_annotations()] == [str(x) for x in labels]


def test_top_errors_lists_the_off_diagonal_counts_commonest_first():
    confusion = {"classes": ["a", "b", "c"], "counts": [[5, 1, 0], [3, 7, 2], [0, 0, 9]]}
    top = gnuradio_eval.top_errors({"confusion_matrix_snr_ge_10db": confusion}, count=2)
    assert top == "6: b->a 3, b->c 2"
