"""The markdown page of a `rfcls bench backends` report: how it was made, then one table per
question the issue asks (sweep, growth with length, accuracy, norms, CPU budget, GPU TFLOP/s)."""

from __future__ import annotations

import math

from benchmarks.environment import report_head

NOT_RUN = "-"
# point key -> (column head, what it is) of batch-1 p50s replayed from a CUDA graph
GRAPH_LATENCIES = {
    "latency_cuda_graph": ("graph p50 ms", "CUDA graph"),
    "latency_compiled_graph": ("compiled graph p50 ms", "CUDA graph of torch.compile'd stages"),
}


def fmt(value: float | None, digits: int = 1) -> str:
    return NOT_RUN if value is None else f"{value:,.{digits}f}"


def ok_points(report: dict, size: str, model: str) -> list[dict]:
    return [
        p
        for p in report["points"]
        if p["size"] == size and p["model"] == model and p["status"] == "ok"
    ]


def growth(points: list[dict]) -> dict | None:
    """Forward time per recording (1 / throughput) at the longest vs the shortest measured length,
    and the log-log slope between them: ~1 for linear, ~2 for quadratic growth."""
    timed = [p for p in points if p.get("throughput_per_s")]
    if len(timed) < 2:
        return None
    first, last = timed[0], timed[-1]
    ratio = first["throughput_per_s"] / last["throughput_per_s"]
    return {
        "from_tokens": first["tokens"],
        "to_tokens": last["tokens"],
        "time_ratio": ratio,
        "slope": math.log(ratio) / math.log(last["tokens"] / first["tokens"]),
    }


def model_names(report: dict) -> list[str]:
    return list(dict.fromkeys(p["model"] for p in report["points"]))


def sizes(report: dict) -> list[str]:
    return list(dict.fromkeys(p["size"] for p in report["points"]))


def markdown(report: dict) -> str:
    limits = report["limits"]
    budget = report["latency_budget_ms"]
    head = report_head(f"Attention backends ({report['device']})", report)
    lines = [
        *head[:2],
        *run_notes(report),
        *head[2:],
        f"- torch threads: {report['threads'] or 'default'}; one fresh process per point",
        "- model sizes: "
        + "; ".join(
            f"{name}: d_model {c['d_model']}, {c['n_heads']} heads, {c['n_layers']} layers, "
            f"MLP {c['mlp_ratio']}x, {c['dtype']}"
            for name, c in report["model_sizes"].items()
        ),
        "- latency: one request of one recording, IQ already on the device, features + model; "
        f"p50/p99 over the repeats shown (at least {limits['min_repeats']}, at most "
        f"{limits['latency_repeats']}, within {limits['timing_budget_s']} s of timed calls), "
        f"after a warm-up call; budget {budget:g} ms; CPU ms: the process's CPU time per request "
        "(mean), beside wall time because other work on a shared machine stretches wall time only",
        "- throughput: forward pass only (features precomputed), recordings/s at the largest "
        f"power-of-two batch up to {limits['max_batch']} whose forward fits in memory and in "
        f"{limits['call_limit_s']:g} s (a warm call's time, where the first is over); median "
        "over the repeats shown",
        "- KV MB: the backend's own K/V (or latent) state, `model.kv_memory_bytes`, at the "
        "throughput batch and per recording; peak MB: measured growth during one forward at "
        "the throughput batch (CUDA max_memory_allocated, or the process's peak RSS on CPU)",
        f"- limits: {limits['point_time_limit_s']:g} s per point, "
        + (
            f"{limits['memory_limit_mb']} MB address space above the process's own on CPU; "
            if report["device"] == "cpu"
            else ""
        )
        + "a model that runs out of memory or time is not run at longer lengths (rows say so)",
        "",
    ]
    for size in sizes(report):
        lines += sweep_table(report, size)
    lines += growth_table(report)
    lines += accuracy_table(report)
    lines += norm_table(report)
    lines += budget_table(report)
    lines += tflops_table(report)
    lines += goals_table(report)
    if report.get("charts"):
        lines += ["## Charts", ""] + [f"![{name}]({name})" for name in report["charts"]] + [""]
    return "\n".join(lines)


def run_notes(report: dict) -> list[str]:
    """What a reader must know before the figures: the run is unfinished, or resumed."""
    notes = []
    if report.get("partial"):
        notes += [
            "> **Partial:** the run had not finished (cut off, or still running) when this was "
            "written. Below is what it had measured; the same command with `--resume` goes on.",
            "",
        ]
    if "resumed" in report:
        earlier = report["resumed"]
        where = earlier["hardware"]["gpu"] or earlier["hardware"]["cpu_model"]
        notes += [
            f"> **Resumed:** what the cut-off run `{earlier['command']}` had measured (on "
            f"{where}) was kept; the rest was measured by this run.",
            "",
        ]
    return notes


def sweep_table(report: dict, size: str) -> list[str]:
    budget = report["latency_budget_ms"]
    points = [p for p in report["points"] if p["size"] == size]
    # GPU-only columns: batch-1 latency replayed from a CUDA graph, eager stages and compiled;
    # throughput via torch.compile
    graphs = [key for key in GRAPH_LATENCIES if any(key in p for p in points)]
    compiled = any("compiled" in p for p in points)
    extra_heads = [GRAPH_LATENCIES[key][0] for key in graphs] + ["compiled rec/s"] * compiled
    heads = [
        "model", "tokens", "status", "batch", "recordings/s", "KV MB", "KV MB/rec", "peak MB",
        "p50 ms", "p99 ms", "CPU ms", f"p99 <= {budget:g} ms", *extra_heads,
        "repeats (latency/throughput)",
    ]  # fmt: skip
    lines = [
        f"## {size} size",
        "",
        "| " + " | ".join(heads) + " |",
        "| --- | ---: | --- |" + " ---: |" * 8 + " --- |" + " ---: |" * len(extra_heads) + " --- |",
    ]
    for p in points:
        if p["status"] != "ok":
            detail = p.get("detail", "").splitlines()[-1] if p.get("detail") else ""
            lines.append(
                f"| {p['model']} | {p['tokens']} | **{p['status']}**: {detail} "
                + "| - " * (len(heads) - 3)
                + "|"
            )
            continue
        lat = p["latency"]
        batch = NOT_RUN if p["batch"] is None else f"{p['batch']} ({p['batch_limited_by']})"
        extra = [graph_p50_text(p, key) for key in graphs] + [compiled_text(p)] * compiled
        lines.append(
            f"| {p['model']} | {p['tokens']} | ok | {batch} | {fmt(p.get('throughput_per_s'))} "
            f"| {fmt(p.get('kv_mb'))} | {fmt(p['kv_mb_per_recording'], 2)} "
            f"| {fmt(p.get('peak_mb'))} | {lat['p50_ms']:.2f} | {lat['p99_ms']:.2f} "
            f"| {fmt(p['latency_cpu_ms_mean'], 2)} "
            f"| {'yes' if p['within_budget'] else 'no'} | "
            + "".join(f"{cell} | " for cell in extra)
            + f"{lat['repeats']}/{p.get('throughput_repeats', NOT_RUN)} |"
        )
    return [*lines, ""]


def graph_p50_text(point: dict, key: str = "latency_cuda_graph") -> str:
    graph = point.get(key)
    if graph is None:
        return NOT_RUN
    return f"{graph['p50_ms']:.2f}" if graph["status"] == "ok" else graph["status"]


def compiled_text(point: dict) -> str:
    run = point.get("compiled")
    if run is None:
        return NOT_RUN
    if run["status"] != "ok":
        return run["status"]
    text = f"{run['throughput_per_s']:,.1f} (compile {run['compile_s']:g} s)"
    if "halved_because" in run:  # the compiled forward did not fit at the eager batch
        text += f" at batch {run['batch']}: {'; '.join(run['halved_because'])}"
    graphed = run.get("graphed")
    if graphed is None:
        return text
    if graphed["status"] != "ok":
        return f"{text}; CUDA graph {graphed['status']}"
    return f"{text}; CUDA graph {graphed['throughput_per_s']:,.1f}"


def growth_table(report: dict) -> list[str]:
    lines = [
        "## Growth with sequence length",
        "",
        "Forward time per recording (1 / throughput) at the longest measured length over the "
        "shortest, and the log-log slope (1 = linear, 2 = quadratic).",
        "",
        "| size | model | from | to | time ratio | slope |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for size in sizes(report):
        for model in model_names(report):
            g = growth(ok_points(report, size, model))
            if g is None:
                lines.append(f"| {size} | {model} | - | - | fewer than 2 lengths measured | - |")
                continue
            lines.append(
                f"| {size} | {model} | {g['from_tokens']} | {g['to_tokens']} "
                f"| {g['time_ratio']:.1f}x | {g['slope']:.2f} |"
            )
    return [*lines, ""]


def accuracy_table(report: dict) -> list[str]:
    lines = [
        "## Accuracy of the shipped weights (default size)",
        "",
        "The `rfcls evaluate` evaluation set (seed, 4096 samples = 31 tokens per recording), "
        "scored with rfmodel.evaluate's functions; the weights are trained at the default "
        "input lengths, so accuracy is not measured per sequence length.",
        "",
        "| model | accuracy | SNR >= 10 dB | SNR 0 dB | examples | weights |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for model, acc in report["accuracy"].items():
        if acc["status"] != "ok":
            lines.append(f"| {model} | {acc['status']} | - | - | - | - |")
            continue
        values = list(acc["summary"].values())
        lines.append(
            f"| {model} | {fmt(values[0], 4)} | {fmt(values[1], 4)} | {fmt(values[2], 4)} "
            f"| {acc['n_examples']} | {acc['version']} |"
        )
    return [*lines, ""]


def norm_table(report: dict) -> list[str]:
    """The norm ablation from the alternating pairs (same process, calls interleaved), which
    the machine's drifting load cannot tilt the way it can tilt sweep points run minutes apart."""
    if not report["norm_pairs"]:
        return []
    backend = report["norm_pairs"][0]["backend"]
    lines = [
        f"## RMSNorm vs LayerNorm ({backend})",
        "",
        f"Accuracy: RMSNorm {accuracy_text(report, backend)}, "
        f"LayerNorm {accuracy_text(report, backend + '-layernorm')}.",
        "",
        "Latency of one request, the two models' calls alternating in one process.",
        "",
        "| size | tokens | RMSNorm p50 ms | LayerNorm p50 ms | LayerNorm / RMSNorm | pairs |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report["norm_pairs"]:
        head = f"| {row['size']} | {row['tokens']} "
        if row["status"] != "ok":
            lines.append(head + f"| **{row['status']}**: {row.get('detail', '')} | - | - | - |")
            continue
        p50 = row["p50_ms"]
        lines.append(
            head + f"| {p50['rmsnorm']:.2f} | {p50['layernorm']:.2f} "
            f"| {row['layernorm_over_rmsnorm']:.2f} | {row['pairs']} |"
        )
    return [*lines, ""]


def accuracy_text(report: dict, model: str) -> str:
    acc = report["accuracy"].get(model, {"status": "not measured"})
    return f"{acc['summary']['accuracy_overall']:.4f}" if acc["status"] == "ok" else acc["status"]


def budget_table(report: dict) -> list[str]:
    budget = report["latency_budget_ms"]
    lines = [
        f"## Default model within the {budget:g} ms budget",
        "",
        "p99 of one request (features + model, one thread) at the default input length, and "
        "the longest input whose p99 stays within the budget (doubling, then bisection).",
        "",
        "| backend | default input | p50 ms | p99 ms | repeats | longest input within budget |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for backend, r in report["budget_search"].items():
        if r["status"] != "ok":
            lines.append(
                f"| {backend} | **{r['status']}**: {r.get('detail', '')} | - | - | - | - |"
            )
            continue
        lat = r["default_latency"]
        longest = r["longest_tokens_within_budget"]
        if longest is None:
            longest_text = "none (the default input is over budget)"
        else:
            longest_text = f"{longest} tokens = {r['longest_samples_within_budget']} samples"
            if r["search_capped"]:
                longest_text += " (search cap; longer not tried)"
        lines.append(
            f"| {backend} | {r['default_samples']} samples = {r['default_tokens']} tokens "
            f"| {lat['p50_ms']:.2f} | {lat['p99_ms']:.2f} | {lat['repeats']} | {longest_text} |"
        )
    return [*lines, ""]


def tflops_table(report: dict) -> list[str]:
    if report["matmul_peak"] is None:
        return [
            "## Attention TFLOP/s",
            "",
            "GPU only; not measured on this device.",
            "",
        ]
    peak = report["matmul_peak"]
    lines = ["## Attention TFLOP/s", ""]
    if peak["status"] != "ok":
        lines.append(f"bf16 matmul peak: {peak['status']}: {peak.get('detail', '')}")
    else:
        lines.append(
            f"Measured bf16 matmul peak ({peak['n']}x{peak['n']}, median of {peak['repeats']}): "
            f"{peak['tflops']:.1f} TFLOP/s. Attention: first layer's core at the throughput "
            "batch, 4*B*H*T^2*d FLOPs."
        )
    lines += ["", "| size | model | tokens | attention TFLOP/s |", "| --- | --- | ---: | ---: |"]
    for p in report["points"]:
        if p.get("attention_tflops") is not None:
            lines.append(
                f"| {p['size']} | {p['model']} | {p['tokens']} | {p['attention_tflops']:.1f} |"
            )
    return [*lines, ""]


def point_at(report: dict, model: str, tokens: int, size: str = "reference") -> dict | None:
    for p in ok_points(report, size, model):
        if p["tokens"] == tokens:
            return p
    return None


def best_throughput(point: dict | None) -> tuple[float | None, str]:
    """The highest of eager, torch.compile and its CUDA graph throughput, and which it was."""
    if point is None or point.get("throughput_per_s") is None:
        return None, "not measured"
    best, how = point["throughput_per_s"], "eager"
    compiled = point.get("compiled", {})
    if compiled.get("status") != "ok":
        return best, how
    graphed = compiled.get("graphed", {})
    for run, name in ((compiled, "torch.compile"), (graphed, "torch.compile, CUDA graph")):
        if run.get("status") == "ok" and run["throughput_per_s"] > best:
            best, how = run["throughput_per_s"], name
    return best, how


def best_batch1_p50(point: dict | None) -> tuple[float | None, str]:
    """The lowest of eager and CUDA-graph batch-1 p50s, and which it was."""
    if point is None:
        return None, "not measured"
    best, how = point["latency"]["p50_ms"], "eager"
    for key, (_, name) in GRAPH_LATENCIES.items():
        graph = point.get(key, {})
        if graph.get("status") == "ok" and graph["p50_ms"] < best:
            best, how = graph["p50_ms"], name
    return best, how


def goal_row(goal: str, value: float | None, text: str, met: bool) -> str:
    verdict = "not measured" if value is None else ("met" if met else "**not met**")
    return f"| {goal} | {text} | {verdict} |"


def goals_table(report: dict) -> list[str]:
    """The backend issue's GPU goals (reference size, bf16, forward only), judged from this run's
    points; a goal whose points are missing says so."""
    if report["device"] == "cpu" or "reference" not in sizes(report):
        return []
    lines = [
        "## GPU goals (reference size)",
        "",
        "Throughput: the best of eager, torch.compile and (on a GPU) the compiled forward "
        "replayed from a CUDA graph, when `--compile` ran; batch-1 "
        "latency: the best of eager, a CUDA graph replay and (with `--compile`) a CUDA graph of "
        "the request's stages through torch.compile.",
        "",
        "| goal | measured | verdict |",
        "| --- | --- | --- |",
    ]
    latent_4k, how = best_throughput(point_at(report, "latent", 4096))
    lines.append(
        goal_row(
            "latent at 4k tokens >= 10,000 recordings/s",
            latent_4k,
            f"{fmt(latent_4k)}/s ({how})",
            latent_4k is not None and latent_4k >= 10_000,
        )
    )
    latent_16k, latent_how = best_throughput(point_at(report, "latent", 16384))
    flash_16k, flash_how = best_throughput(point_at(report, "flash", 16384))
    ratio = None if latent_16k is None or flash_16k is None else latent_16k / flash_16k
    lines.append(
        goal_row(
            "latent at 16k tokens >= 6x flash",
            ratio,
            "latent and flash not both measured at 16k"
            if ratio is None
            else f"{ratio:.2f}x ({latent_16k:,.1f}/s {latent_how} vs {flash_16k:,.1f}/s "
            f"{flash_how})",
            ratio is not None and ratio >= 6,
        )
    )
    flash_4k, how = best_throughput(point_at(report, "flash", 4096))
    lines.append(
        goal_row(
            "flash at 4k tokens >= 3,000 recordings/s",
            flash_4k,
            f"{fmt(flash_4k)}/s ({how})",
            flash_4k is not None and flash_4k >= 3_000,
        )
    )
    for model in ("flash", "gqa", "latent"):
        p50, how = best_batch1_p50(point_at(report, model, 4096))
        lines.append(
            goal_row(
                f"{model}: batch-1 p50 at 4k tokens < 2 ms",
                p50,
                f"{fmt(p50, 2)} ms ({how})",
                p50 is not None and p50 < 2,
            )
        )
    for model in ("latent", "latte"):
        g = growth(ok_points(report, "reference", model))
        spans = g is not None and (g["from_tokens"], g["to_tokens"]) == (1024, 16384)
        value = g["time_ratio"] if spans else None
        text = f"{g['time_ratio']:.1f}x" if spans else "1k and 16k not both measured"
        lines.append(
            goal_row(f"{model}: time 1k -> 16k tokens <= 20x", value, text, spans and value <= 20)
        )
    return [*lines, ""]
