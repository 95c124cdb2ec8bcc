"""Calibration figures against an explicit per-answer computation, and on data whose calibration
is known by construction."""

import numpy as np
import pytest

from rfmodel.calibration import N_BINS, calibration


def random_probabilities(rng: np.random.Generator, n: int, classes: int, sharpness: float):
    logits = sharpness * rng.standard_normal((n, classes))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def labels_drawn_from(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    """Each label drawn from its own row: probabilities calibrated by construction."""
    return (rng.random((len(p), 1)) > p.cumsum(axis=1)).sum(axis=1)


def test_matches_an_explicit_loop():
    rng = np.random.default_rng(3)
    p = random_probabilities(rng, 500, 5, sharpness=2.0)
    labels = rng.integers(0, 5, 500)
    got = calibration(p, labels)

    per_bin: dict[int, list[tuple[float, bool]]] = {}
    for row, label in zip(p, labels, strict=True):
        confidence = row.max()
        b = next(k for k in range(N_BINS) if confidence <= (k + 1) / N_BINS)
        per_bin.setdefault(b, []).append((confidence, row.argmax() == label))
    error = sum(
        len(v) / 500 * abs(np.mean([h for _, h in v]) - np.mean([c for c, _ in v]))
        for v in per_bin.values()
    )
    assert got["expected_calibration_error"] == pytest.approx(error, rel=1e-12)
    assert [b["count"] for b in got["bins"]] == [len(per_bin[k]) for k in sorted(per_bin)]
    true_class = [row[label] for row, label in zip(p, labels, strict=True)]
    assert got["log_loss"] == pytest.approx(-np.mean(np.log(true_class)))
    assert got["mean_confidence"] == pytest.approx(p.max(axis=1).mean())


def test_calibrated_by_construction_scores_near_zero_and_overconfident_does_not():
    rng = np.random.default_rng(4)
    p = random_probabilities(rng, 20_000, 8, sharpness=1.5)
    labels = labels_drawn_from(rng, p)
    assert calibration(p, labels)["expected_calibration_error"] < 0.015
    # the same answers, announced with the logits doubled: right as often, surer than that
    sharpened = p**2 / (p**2).sum(axis=1, keepdims=True)
    overconfident = calibration(sharpened, labels)
    assert overconfident["expected_calibration_error"] > 0.08
    assert overconfident["mean_confidence"] > calibration(p, labels)["mean_confidence"]


def test_a_confidence_on_a_bin_edge_goes_to_the_bin_below():
    p = np.array([[1 / 3, 1 / 3, 1 / 3], [0.6, 0.2, 0.2], [1.0, 0.0, 0.0]])
    bins = calibration(p, np.array([0, 1, 0]))["bins"]
    # 0.6 = 9/15 is the upper edge of (8/15, 9/15]
    assert [(round(b["high"] * N_BINS), b["count"]) for b in bins] == [(5, 1), (9, 1), (15, 1)]
    assert [b["accuracy"] for b in bins] == [1.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ("probabilities", "labels", "field"),
    [
        ([[0.5, 0.5]], [2], "labels"),
        ([[0.5, 0.5]], [-1], "labels"),
        ([[0.5, 0.5], [0.5, 0.5]], [[0], [1]], "labels"),
        ([[0.5, 0.5]], [0.0], "labels"),
        (np.zeros((0, 2)), np.zeros(0, int), "labels"),
        ([[1.0, 1.0]], [0], "probabilities"),
        ([[1.5, -0.5]], [0], "probabilities"),
        ([[np.nan, 1.0]], [0], "probabilities"),
        ([0.5, 0.5], [0, 1], "probabilities"),
    ],
)
def test_refuses_what_is_not_probabilities_and_labels(probabilities, labels, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        calibration(np.asarray(probabilities), np.asarray(labels))
