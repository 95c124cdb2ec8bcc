"""PNG charts of a `rfcls bench backends` report, one file per figure, one panel per model size.
Built with matplotlib's object API (no pyplot), as rfmodel.plots does."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from benchmarks.report import model_names, ok_points, sizes


def panels(report: dict, title: str) -> tuple[Figure, list]:
    names = sizes(report)
    fig = Figure(figsize=(6 * len(names), 4.5))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, size in zip(axes, names, strict=True):
        ax.set_title(f"{title} ({size} size, {report['device']})", fontsize="medium")
        ax.grid(alpha=0.3, which="both")
    return fig, list(zip(axes, names, strict=True))


def cut_note(report: dict, size: str, model: str) -> str:
    """' (time limit from 8192)' for a model whose longer lengths did not run."""
    for p in report["points"]:
        if p["size"] == size and p["model"] == model and p["status"] != "ok":
            return f" ({p['status']} from {p['tokens']})"
    return ""


def plot_vs_length(
    report: dict, path: Path, title: str, ylabel: str, value: Callable[[dict], float | None]
) -> Path:
    fig, axes = panels(report, title)
    for ax, size in axes:
        for model in model_names(report):
            points = [(p["tokens"], value(p)) for p in ok_points(report, size, model)]
            points = [(t, v) for t, v in points if v is not None]
            if points:
                tokens, values = zip(*points, strict=True)
                label = model + cut_note(report, size, model)
                ax.plot(tokens, values, marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set(xlabel="sequence length (tokens)", ylabel=ylabel)
        if title.startswith("Latency"):
            ax.axhline(report["latency_budget_ms"], color="red", linestyle="--", label="budget")
        legend(ax)
    return save(fig, path)


def legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="x-small")


def plot_time_vs_length(report: dict, path: Path) -> Path:
    """Log-log forward time per recording, with slope-1 (linear) and slope-2 (quadratic) guides
    drawn through the fastest model's first point."""
    fig, axes = panels(report, "Forward time per recording")
    for ax, size in axes:
        starts = []
        for model in model_names(report):
            points = [p for p in ok_points(report, size, model) if p.get("throughput_per_s")]
            if points:
                tokens = [p["tokens"] for p in points]
                ms = [1e3 / p["throughput_per_s"] for p in points]
                ax.plot(tokens, ms, marker="o", label=model + cut_note(report, size, model))
                starts.append((tokens[0], ms[0]))
        if starts:
            t0, y0 = min(starts, key=lambda s: (s[0], s[1]))
            t_end = max(report["lengths"])
            for slope, style in ((1, ":"), (2, "-.")):
                ax.plot(
                    [t0, t_end],
                    [y0, y0 * (t_end / t0) ** slope],
                    color="gray",
                    linestyle=style,
                    label=f"slope {slope} ({'linear' if slope == 1 else 'quadratic'})",
                )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set(xlabel="sequence length (tokens)", ylabel="ms per recording (log)")
        legend(ax)
    return save(fig, path)


def plot_accuracy(report: dict, path: Path) -> Path | None:
    measured = {m: a for m, a in report["accuracy"].items() if a["status"] == "ok"}
    if not measured:
        return None
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    names = list(measured)
    values = [measured[m]["summary"]["accuracy_overall"] for m in names]
    bars = ax.bar(names, values)
    ax.bar_label(bars, fmt="%.3f", fontsize="small")
    ax.set(ylim=(0, 1.05), ylabel="accuracy", title="Accuracy of the shipped weights (eval set)")
    ax.grid(alpha=0.3, axis="y")
    return save(fig, path)


def plot_norms(report: dict, path: Path) -> Path | None:
    """p50 of one request with each norm (alternating pairs) against sequence length."""
    if not any(row["status"] == "ok" for row in report["norm_pairs"]):
        return None
    fig, axes = panels(report, f"RMSNorm vs LayerNorm ({report['norm_pairs'][0]['backend']})")
    for ax, size in axes:
        rows = [r for r in report["norm_pairs"] if r["size"] == size and r["status"] == "ok"]
        for norm in ("rmsnorm", "layernorm"):
            ax.plot(
                [r["tokens"] for r in rows],
                [r["p50_ms"][norm] for r in rows],
                marker="o",
                label=f"{norm} p50",
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set(xlabel="sequence length (tokens)", ylabel="ms (log)")
        legend(ax)
    return save(fig, path)


def plot_budget(report: dict, path: Path) -> Path | None:
    measured = {b: r for b, r in report["budget_search"].items() if r["status"] == "ok"}
    if not measured:
        return None
    fig = Figure(figsize=(11, 4.5))
    left, right = fig.subplots(1, 2)
    names = list(measured)
    bars = left.bar(names, [measured[b]["default_latency"]["p99_ms"] for b in names])
    left.bar_label(bars, fmt="%.1f", fontsize="small")
    left.axhline(report["latency_budget_ms"], color="red", linestyle="--", label="budget")
    left.set(ylabel="p99 ms", title="Default model, default input: p99 of one request")
    left.legend(fontsize="small")
    longest = [measured[b]["longest_tokens_within_budget"] or 0 for b in names]
    bars = right.bar(names, longest)
    right.bar_label(bars, fontsize="small")
    right.set(ylabel="tokens", title="Longest input within the budget (p99)")
    for ax in (left, right):
        ax.grid(alpha=0.3, axis="y")
    return save(fig, path)


def save_bar_panels(
    fig: Figure, axes: list, x: Sequence[float], labels: list[str], path: Path
) -> Path:
    """Panels of bars grouped at x: the groups labelled, a grid and a legend on each; then save."""
    for ax in axes:
        ax.set_xticks(x, labels)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize="small")
    return save(fig, path)


def save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def write_charts(report: dict, out: Path) -> list[Path]:
    """Every chart the report has data for, as OUT-<figure>.png."""

    def png(name: str) -> Path:
        return out.with_name(f"{out.name}-{name}.png")

    charts = [
        plot_vs_length(
            report,
            png("throughput"),
            "Throughput (forward)",
            "recordings/s (log)",
            lambda p: p.get("throughput_per_s"),
        ),
        plot_vs_length(
            report,
            png("latency"),
            "Latency p99, one request",
            "ms (log)",
            lambda p: p["latency"]["p99_ms"],
        ),
        plot_vs_length(
            report,
            png("kv-memory"),
            "K/V memory per recording",
            "MB (log)",
            lambda p: p["kv_mb_per_recording"],
        ),
        plot_vs_length(
            report,
            png("peak-memory"),
            "Peak memory growth at the throughput batch",
            "MB (log)",
            lambda p: p.get("peak_mb") or None,
        ),
        plot_time_vs_length(report, png("time-vs-length")),
        plot_accuracy(report, png("accuracy")),
        plot_norms(report, png("norms")),
        plot_budget(report, png("budget")),
    ]
    return [c for c in charts if c is not None]
