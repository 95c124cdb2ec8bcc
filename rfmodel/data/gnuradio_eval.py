"""Score trained models on the GNU Radio evaluation set (made by gnuradio_reference.py) beside the
same number of rfmodel.data recordings at the same SNRs, to show whether what the models learned
from this generator carries over to an independent one.

    .venv/bin/python -m rfmodel.data.gnuradio_eval runs/gnuradio/eval.npz MODEL_DIR [...] \
        [--out runs/gnuradio/metrics.json] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from rfmodel.bundle import BundleError, load_bundle
from rfmodel.evaluate import (
    EVAL_SEED,
    EvaluateError,
    display_names,
    pick_device,
    probabilities,
    score,
)

from .classes import class_index
from .stream import make_eval_set


def load_reference(path: Path, classes: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    """iq [N, n] complex64, label indices into `classes` [N], snr [N] (NaN for noise)."""
    with np.load(path) as data:
        iq, names, snr = data["iq"], data["label"], data["snr_db"].astype(np.float32)
    labels = np.asarray([class_index(str(name), classes) for name in names], dtype=np.int64)
    return iq.astype(np.complex64), labels, snr


def matching_synthetic_set(labels: np.ndarray, snr: np.ndarray, n_samples: int, classes):
    """rfmodel.data's evaluation set with as many examples per class and the same SNR values."""
    per_class = np.bincount(labels, minlength=len(classes))
    present = [c for c in range(len(classes)) if per_class[c]]
    if len({int(per_class[c]) for c in present}) != 1:
        raise EvaluateError("the reference set is not balanced over its classes")
    snr_values = sorted({float(v) for v in snr[np.isfinite(snr)]})
    return make_eval_set(
        EVAL_SEED, int(per_class[present[0]]), n_samples, snr_values, [classes[c] for c in present]
    ), [classes[c] for c in present]


def compare(args: argparse.Namespace) -> dict[str, Any]:
    device = pick_device(args.device)
    results: dict[str, Any] = {}
    for path, name in zip(args.model_dirs, display_names(args.model_dirs), strict=True):
        bundle = load_bundle(path, device=device)
        iq, labels, snr = load_reference(args.data, bundle.classes)
        synthetic, present = matching_synthetic_set(labels, snr, iq.shape[1], bundle.classes)
        # the synthetic set indexes its own (present) class list: map back to the model's
        synthetic_labels = np.asarray(
            [class_index(present[i], bundle.classes) for i in synthetic.labels]
        )
        scores = {}
        for set_name, (x, y, s) in {
            "gnuradio": (iq, labels, snr),
            "rfmodel.data": (synthetic.iq, synthetic_labels, synthetic.snr),
        }.items():
            p = probabilities(bundle.model, bundle.feature_config, x, device, args.batch_size)
            scores[set_name] = score(y, s, p.argmax(axis=1), bundle.classes, p)
        results[name] = scores
    return results


def report(results: dict[str, Any]) -> str:
    lines = []
    for name, scores in results.items():
        lines.append(f"{name}: accuracy gnuradio / rfmodel.data")
        for key in scores["gnuradio"]["summary"]:
            a, b = (scores[s]["summary"][key] for s in ("gnuradio", "rfmodel.data"))
            lines.append(f"  {key:<24} {_fmt(a)} / {_fmt(b)}")
        a, b = (scores[s]["calibration"]["expected_calibration_error"] for s in scores)
        lines.append(f"  {'calibration error (ECE)':<24} {_fmt(a)} / {_fmt(b)}")
        for cls, entry in scores["gnuradio"]["per_class"].items():
            if entry["count"]:
                other = scores["rfmodel.data"]["per_class"][cls]["accuracy"]
                lines.append(f"  {cls:<24} {_fmt(entry['accuracy'])} / {_fmt(other)}")
        for set_name in ("gnuradio", "rfmodel.data"):
            lines.append(f"  errors at SNR >= 10 dB, {set_name}: {top_errors(scores[set_name])}")
    return "\n".join(lines)


def top_errors(scores: dict[str, Any], count: int = 10) -> str:
    """'N: true->predicted n, ...' from the SNR >= 10 dB confusion matrix, commonest first."""
    matrix = scores["confusion_matrix_snr_ge_10db"]
    names, counts = matrix["classes"], np.asarray(matrix["counts"])
    np.fill_diagonal(counts, 0)
    pairs = sorted(zip(*np.nonzero(counts), strict=True), key=lambda ij: -counts[ij])
    common = ", ".join(f"{names[i]}->{names[j]} {counts[i, j]}" for i, j in pairs[:count])
    return f"{counts.sum()}: {common}"


def _fmt(value: float | None) -> str:
    return "  -   " if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="the .npz written by gnuradio_reference.py")
    parser.add_argument("model_dirs", nargs="+", type=Path, metavar="MODEL_DIR")
    parser.add_argument("--out", type=Path, help="write the scores as JSON here")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)
    try:
        results = compare(args)
    except (EvaluateError, BundleError, ValueError, OSError, KeyError) as exc:
        print(f"gnuradio_eval: {exc}", file=sys.stderr)
        return 2
    print(report(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
