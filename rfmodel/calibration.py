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


def checked(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two as float64 [N, C] and int [N], or ValueError naming the one that is not."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels: expected [N >= 1] class indices, got {labels.dtype} {labels.shape}"
        )
    if probabilities.shape[:1] != labels.shape or probabilities.ndim != 2:
        raise ValueError(
            f"probabilities: expected [{labels.size}, classes], got {probabilities.shape}"
        )
    if labels.min() < 0 or labels.max() >= probabilities.shape[1]:
        raise ValueError(f"labels: outside 0..{probabilities.shape[1] - 1}")
    if not np.isfinite(probabilities).all() or (probabilities < 0).any():
        raise ValueError("probabilities: must be finite and non-negative")
    if not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("probabilities: each row must sum to 1")
    return probabilities, labels


def calibration(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """probabilities [N, C] (rows summing to 1), labels [N] class indices -> expected calibration
    error, mean confidence, log loss and the reliability diagram's bins (empty ones left out)."""
    probabilities, labels = checked(probabilities, labels)
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
