"""Whether a model's probabilities mean what they say: of the answers given with probability
about 0.9, are about 90 % right? A spectrum monitor thresholds alerts on them, so the evaluation
reports it beside the accuracy.

Expected calibration error (Guo et al., "On Calibration of Modern Neural Networks", 2017): the
top-class probabilities binned into N_BINS equal-width bins (lo, hi], each bin's |accuracy - mean
confidence| weighted by its share of the answers. Log loss is the mean negative log-probability
of the true class: it punishes a confident wrong answer without bins.
"""

from __future__ import annotations

from typing import Any

import numpy as np

N_BINS = 15
_LOG_FLOOR = 1e-12  # a probability that underflowed to 0 costs 27.6 nats, not infinity


def calibration(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """probabilities [N, C] (rows summing to 1), labels [N] class indices -> expected calibration
    error, mean confidence, log loss and the reliability diagram's bins (empty ones left out)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[0] != labels.shape[0]:
        raise ValueError(
            f"probabilities: expected [{labels.shape[0]}, classes], got {probabilities.shape}"
        )
    confidence = probabilities.max(axis=1)
    hit = probabilities.argmax(axis=1) == labels
    # bins (lo, hi]: searchsorted on the inner edges puts a confidence equal to an edge below it
    edges = np.linspace(0.0, 1.0, N_BINS + 1)
    which = np.searchsorted(edges[1:-1], confidence, side="left")
    bins = []
    error = 0.0
    for b in range(N_BINS):
        chosen = which == b
        count = int(chosen.sum())
        if not count:
            continue
        accuracy, mean_confidence = float(hit[chosen].mean()), float(confidence[chosen].mean())
        error += count / labels.size * abs(accuracy - mean_confidence)
        bins.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": count,
                "accuracy": accuracy,
                "mean_confidence": mean_confidence,
            }
        )
    true_class = probabilities[np.arange(labels.size), labels]
    return {
        "expected_calibration_error": float(error),
        "mean_confidence": float(confidence.mean()),
        "log_loss": float(-np.log(np.maximum(true_class, _LOG_FLOOR)).mean()),
        "bins": bins,
    }
