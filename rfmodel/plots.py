"""PNG charts of evaluation metrics. Figures are built with matplotlib's object API (no pyplot), so
they render with Agg whatever backend the process has and leave no global state behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure


def plot_accuracy_vs_snr(results: dict[str, dict[str, Any]], path: Path) -> None:
    """One line per model: accuracy over the signal classes at each in-band SNR."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for name, metrics in results.items():
        by_snr = metrics["accuracy_by_snr"]
        snr = [float(k) for k in by_snr]
        ax.plot(snr, [v["accuracy"] for v in by_snr.values()], marker="o", label=name)
    ax.set(xlabel="in-band SNR (dB)", ylabel="accuracy", ylim=(0, 1.02), title="Accuracy vs SNR")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_reliability(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Reliability diagram, one line per model: accuracy against mean confidence in each
    confidence bin; on the diagonal a probability means what it says."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    for name, metrics in results.items():
        cal = metrics["calibration"]
        bins = cal["bins"]
        ax.plot(
            [b["mean_confidence"] for b in bins],
            [b["accuracy"] for b in bins],
            marker="o",
            label=f"{name} (ECE {cal['expected_calibration_error']:.3f})",
        )
    ax.set(
        xlabel="confidence (top-class probability)",
        ylabel="accuracy",
        xlim=(0, 1.02),
        ylim=(0, 1.02),
        title="Reliability",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_confusion(metrics: dict[str, Any], name: str, path: Path) -> None:
    """Heat map of the confusion matrix, each row normalised to the true class's count."""
    classes = metrics["confusion_matrix"]["classes"]
    counts = np.asarray(metrics["confusion_matrix"]["counts"], dtype=float)
    rows = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(8, 7))
    ax = fig.subplots()
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, classes, rotation=60, ha="right", fontsize="small")
    ax.set_yticks(ticks, classes, fontsize="small")
    ax.set(xlabel="predicted", ylabel="true", title=f"{name}: accuracy {metrics['accuracy']:.3f}")
    for (row, col), value in np.ndenumerate(counts):
        if value:
            color = "white" if rows[row, col] > 0.5 else "black"
            ax.text(col, row, f"{value:.0f}", ha="center", va="center", fontsize=6, color=color)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of true class")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
