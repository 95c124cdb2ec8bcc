"""`rfcls evaluate`: accuracy of trained models on the held-out evaluation set.

Every model is scored on the same `make_eval_set(seed, ...)` recordings (default seed EVAL_SEED,
which neither the training stream nor its validation set uses; see rfmodel.train). Writes
OUT/metrics.json (all models; accuracy and calibration), an accuracy-vs-SNR chart and a
reliability diagram with one line per model, a confusion-matrix heat map per model, and, on the
held-out set itself (the default seed, recording length and SNRs, any size), each model's own
metrics.json into its directory: the figures its model card and
tests/rfmodel/test_shipped_weights.py hold it to, which another set, or the same set with fewer
examples per class, must not overwrite.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from preprocessing.features import FeatureConfig
from rfmodel.bundle import Bundle, BundleError, load_bundle, write_metrics
from rfmodel.calibration import calibration
from rfmodel.classifier import RFClassifier
from rfmodel.cli_args import (
    DEVICE_CHOICES,
    DeviceError,
    non_negative_int,
    pick_device,
    positive_int,
    recording_length,
    snr_values,
)
from rfmodel.data import CLASSES, make_eval_set
from rfmodel.data.generator import MAX_SAMPLES, MIN_SAMPLES
from rfmodel.iq_logits import iq_logits

EVAL_SEED = 2_000_029
EVAL_SAMPLES = 4096
SUMMARY_HIGH_SNR_DB = 10.0  # the product goal's "high SNR": accuracy at SNR >= this
SUMMARY_LOW_SNR_DB = 0.0  # and at exactly this in-band SNR


class EvaluateError(Exception):
    """An evaluation that cannot run as asked."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dirs", nargs="+", type=Path, metavar="MODEL_DIR")
    parser.add_argument(
        "--n-per-class",
        type=positive_int,
        default=400,
        help="examples per class; a class's examples cycle through the SNRs",
    )
    parser.add_argument(
        "--samples",
        type=recording_length,
        default=EVAL_SAMPLES,
        help=f"samples per recording, {MIN_SAMPLES} to {MAX_SAMPLES}",
    )
    parser.add_argument("--seed", type=non_negative_int, default=EVAL_SEED)
    parser.add_argument(
        "--snr",
        type=snr_values,
        default=None,
        help="comma-separated in-band SNRs in dB, e.g. --snr=-10,0,10 (default: make_eval_set's)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/eval"))
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    parser.add_argument("--batch-size", type=positive_int, default=256)


@torch.no_grad()
def probabilities(
    model: RFClassifier,
    feature_cfg: FeatureConfig,
    iq: np.ndarray,
    device: torch.device,
    batch_size: int = 256,
) -> np.ndarray:
    """Class probabilities [N, C] float64 of recordings iq [N, S] complex64 (float32, no
    autocast: what the service computes)."""
    rows = []
    for i in range(0, len(iq), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(iq[i : i + batch_size])).to(device)
        rows.append(iq_logits(model, batch, feature_cfg).double().softmax(-1).cpu())
    return torch.cat(rows).numpy()


def predict(*args: Any, **kwargs: Any) -> np.ndarray:
    """Predicted class index per recording: the argmax of probabilities(), same arguments."""
    return probabilities(*args, **kwargs).argmax(axis=1)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    return np.bincount(labels * n_classes + predicted, minlength=n_classes**2).reshape(
        n_classes, n_classes
    )


def accuracy_of(hit: np.ndarray) -> float | None:
    return float(hit.mean()) if hit.size else None


def score(
    labels: np.ndarray,
    snr: np.ndarray,
    predicted: np.ndarray,
    classes: tuple[str, ...],
    probabilities: np.ndarray | None = None,
) -> dict[str, Any]:
    """Accuracy overall, per SNR, per class, the confusion matrix and the product-goal summary;
    with the probabilities [N, C] the predictions came from, their calibration too.

    Pure noise has no SNR (the generator records it as non-finite), so the per-SNR numbers cover
    the signal classes and noise is scored in per_class and the overall accuracy.
    """
    hit = labels == predicted
    counts = confusion_matrix(labels, predicted, len(classes))
    has_snr = np.isfinite(snr)
    high = has_snr & (snr >= SUMMARY_HIGH_SNR_DB)
    snr_values = np.unique(snr[has_snr])
    per_snr = {
        f"{value:g}": {
            "accuracy": accuracy_of(hit[snr == value]),
            "count": int((snr == value).sum()),
        }
        for value in snr_values
    }
    column_totals = counts.sum(axis=0)
    per_class = {
        name: {
            "accuracy": accuracy_of(hit[labels == c]),
            "count": int(counts[c].sum()),
            "precision": float(counts[c, c] / column_totals[c]) if column_totals[c] else None,
        }
        for c, name in enumerate(classes)
    }
    scores = {
        "n_examples": int(labels.size),
        "accuracy": accuracy_of(hit),
        "summary": {
            "accuracy_overall": accuracy_of(hit),
            f"accuracy_snr_ge_{SUMMARY_HIGH_SNR_DB:g}db": accuracy_of(hit[high]),
            f"accuracy_snr_{SUMMARY_LOW_SNR_DB:g}db": accuracy_of(hit[snr == SUMMARY_LOW_SNR_DB]),
        },
        "accuracy_by_snr": per_snr,
        "per_class": per_class,
        "confusion_matrix": {"classes": list(classes), "counts": counts.tolist()},
        # where the goal's accuracy is lost: at high SNR the errors are few pairs of classes
        f"confusion_matrix_snr_ge_{SUMMARY_HIGH_SNR_DB:g}db": {
            "classes": list(classes),
            "counts": confusion_matrix(labels[high], predicted[high], len(classes)).tolist(),
        },
    }
    if probabilities is not None:
        scores["calibration"] = calibration(probabilities, labels)
    return scores


def display_names(paths: list[Path]) -> list[str]:
    """Directory names, with as many parents as tell apart two that would read the same (the
    names key the results and the plots' files)."""
    resolved = [p.resolve() for p in paths]
    if len(set(resolved)) < len(resolved):
        raise EvaluateError(
            f"model_dirs: a directory is given twice ({', '.join(map(str, paths))})"
        )

    def tail(p: Path, depth: int) -> str:
        return "/".join(p.parts[-depth:])

    names = []
    for p in resolved:
        depth = 1
        while any(tail(q, depth) == tail(p, depth) for q in resolved if q != p):
            depth += 1
        names.append(tail(p, depth))
    return names


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from rfmodel.plots import plot_accuracy_vs_snr, plot_confusion, plot_reliability

    device = pick_device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # deterministic, full-precision scores
    names = display_names(args.model_dirs)
    bundles = [load_bundle(path, device=device) for path in args.model_dirs]
    for bundle in bundles:
        if bundle.classes != tuple(CLASSES):
            raise EvaluateError(
                f"classes: model {bundle.path} was trained on {list(bundle.classes)}, "
                f"the evaluation set has {list(CLASSES)}"
            )
    args.out.mkdir(parents=True, exist_ok=True)  # before the set is built: a bad --out fails fast
    eval_kwargs = {} if args.snr is None else {"snr_values": args.snr}
    iq, labels, snr = make_eval_set(args.seed, args.n_per_class, args.samples, **eval_kwargs)
    eval_set = {
        "seed": args.seed,
        "n_per_class": args.n_per_class,
        "n_samples": args.samples,
        "snr_values": sorted({float(v) for v in snr[np.isfinite(snr)]}),
    }
    held_out = args.seed == EVAL_SEED and args.samples == EVAL_SAMPLES and args.snr is None
    results: dict[str, Any] = {}
    for bundle, name in zip(bundles, names, strict=True):
        p = probabilities(bundle.model, bundle.feature_config, iq, device, args.batch_size)
        metrics = {
            "model": {
                "version": bundle.version,
                "backend": bundle.model_config.attn_backend,
                "norm": bundle.model_config.norm,
            },
            "eval_set": eval_set,
            **score(labels, snr, p.argmax(axis=1), bundle.classes, p),
        }
        # the model directory's own copy names no path: it travels with the directory
        if held_out and not scored_on_fewer(bundle, args.n_per_class):
            write_metrics(bundle.path, metrics)
        plot_confusion(metrics, name, args.out / f"confusion_{name.replace('/', '_')}.png")
        results[name] = {**metrics, "model": {"path": str(bundle.path), **metrics["model"]}}
    plot_accuracy_vs_snr(results, args.out / "accuracy_vs_snr.png")
    plot_reliability(results, args.out / "reliability.png")
    (args.out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def scored_on_fewer(bundle: Bundle, n_per_class: int) -> bool:
    """Whether this run has fewer examples per class than the metrics the model directory holds:
    a quick look must not replace the figures its model card and tests hold it to."""
    recorded = (bundle.metrics or {}).get("eval_set", {}).get("n_per_class", 0)
    if n_per_class < recorded:
        print(
            f"kept {bundle.path}'s metrics: scored on {recorded} per class, this run {n_per_class}"
        )
        return True
    return False


def summary_table(results: dict[str, Any]) -> str:
    keys = list(next(iter(results.values()))["summary"])
    width = max(len(n) for n in results)
    lines = [f"{'model':<{width}}  " + "  ".join(keys)]
    for name, metrics in results.items():
        cells = [fmt_accuracy(metrics["summary"][k]).rjust(len(k)) for k in keys]
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def fmt_accuracy(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def run(args: argparse.Namespace) -> int:
    try:
        results = evaluate(args)
    # OSError: an --out that cannot be written names its path
    except (EvaluateError, BundleError, DeviceError, OSError) as exc:
        print(f"rfcls evaluate: {exc}", file=sys.stderr)
        return 2
    print(summary_table(results))
    print(f"wrote {args.out / 'metrics.json'} and plots in {args.out}")
    return 0
