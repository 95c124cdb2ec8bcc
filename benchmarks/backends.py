"""`rfcls bench backends`: the attention backends compared at 1k to 16k tokens.

Per model size (default, reference), backend and sequence length, in a fresh process per point:
p50/p99 latency of one request of one recording (features + model) against the latency budget,
forward-pass throughput in recordings/s at the largest batch that fits, K/V memory (the backend's
own accounting) and measured peak memory. Then the accuracy of the shipped weights on the fixed
evaluation set, RMSNorm vs LayerNorm (flash), and for the default model the p99 at the default
input length and the longest input within the budget. A point that runs out of memory or time is
reported as such, and the longer lengths of that model are not attempted.

    rfcls bench backends                      # CPU, writes docs/benchmarks/backends-cpu.*
    rfcls bench backends --device cuda        # writes docs/benchmarks/backends-cuda.*

The report is rewritten after every measurement, marked partial until the run ends, so a run
cut off by a time limit keeps what it measured; the same command with --resume takes that from
it and goes on (the backends may differ: those measured already are not measured again).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import torch

from benchmarks.charts import write_charts
from benchmarks.cli import add_report_arguments, report_out, script_main
from benchmarks.environment import command_line, cpu_model, hardware, load_average, versions
from benchmarks.isolation import OUT_OF_MEMORY, TIME_LIMIT, run_isolated
from benchmarks.models import MODEL_SIZES, bench_config, bench_dtype, shipped_weights
from benchmarks.point import (
    BudgetSpec,
    MatmulSpec,
    NormPairSpec,
    PointSpec,
    measure_budget,
    measure_matmul_peak,
    measure_norm_pair,
    measure_point,
)
from benchmarks.report import GRAPH_LATENCIES, compiled_text, graph_p50_text, markdown
from rfmodel.bundle import load_bundle
from rfmodel.cli_args import DeviceError, pick_device, positive_int
from rfmodel.config import BACKENDS
from rfmodel.data import CLASSES, make_eval_set
from rfmodel.evaluate import EVAL_SEED, predict, score
from service.settings import Settings

LENGTHS = (1024, 2048, 4096, 8192, 16384)
QUICK_LENGTHS = (32, 64)
NORM_ABLATION_BACKEND = "flash"  # the shipped LayerNorm model (mha-layernorm weights run as flash)
DEFAULT_INPUT_SAMPLES = 4096  # what rfcls evaluate and the training stream use
BUDGET_MS = Settings.model_fields["latency_budget_ms"].default
# what a report resumed with --resume must share with the run resuming it
SWEEP_IDENTITY = ("device", "lengths", "limits", "model_sizes", "latency_budget_ms", "compile")


@dataclass(frozen=True)
class Limits:
    """How far the sweep goes on this device; all of it lands in the report."""

    max_batch: int
    point_time_limit_s: float
    call_limit_s: float
    latency_repeats: int
    min_repeats: int
    timing_budget_s: float
    memory_limit_mb: int | None
    budget_search_max_tokens: int
    budget_search_repeats: int
    eval_per_class: int


DEVICE_LIMITS = {
    # one thread on a shared 2-core box: the whole sweep in under 15 minutes
    "cpu": Limits(
        max_batch=8,
        point_time_limit_s=30.0,
        call_limit_s=1.5,
        latency_repeats=30,
        min_repeats=3,
        timing_budget_s=1.5,
        memory_limit_mb=8192,
        budget_search_max_tokens=16384,
        # the budget verdict is a p99: of 40 calls it leaned on the slowest one, of 200 it is
        # the second slowest (a few minutes more for the whole search)
        budget_search_repeats=200,
        eval_per_class=400,
    ),
    # forwards of a second or more repeat closely on a GPU, so 5 of them give a stable median.
    # A point at 4k tokens took 70-85 s with session 18's flash kernel, 110-125 s with the
    # bound-shift one (two launches, each compiled and autotuned at every batch the doubling
    # search tries): gqa's ran past a 120-s limit (docs/benchmarks/README.md, session 28)
    "cuda": Limits(
        max_batch=4096,
        point_time_limit_s=240.0,
        call_limit_s=10.0,
        latency_repeats=100,
        min_repeats=5,
        timing_budget_s=1.5,
        memory_limit_mb=None,
        budget_search_max_tokens=16384,
        budget_search_repeats=100,
        eval_per_class=400,
    ),
}
QUICK_LIMITS = Limits(
    max_batch=2,
    point_time_limit_s=60.0,
    call_limit_s=2.0,
    latency_repeats=5,
    min_repeats=3,
    timing_budget_s=0.2,
    memory_limit_mb=8192,
    budget_search_max_tokens=64,
    budget_search_repeats=5,
    eval_per_class=2,
)


def add_backends_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backends",
        type=csv_of("backend", BACKENDS),
        default=BACKENDS,
        help=f"comma-separated (default all: {','.join(BACKENDS)})",
    )


def csv_of(kind: str, valid: tuple[str, ...]):
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(v.strip() for v in text.split(",") if v.strip())
        unknown = [n for n in names if n not in valid]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {kind} {unknown or text!r}; valid: {', '.join(valid)}"
            )
        return names

    return parse


def token_counts(text: str) -> tuple[int, ...]:
    """'1k,2k,4096' -> (1024, 2048, 4096)."""
    counts = []
    for item in (v.strip().lower() for v in text.split(",")):
        try:
            count = int(item[:-1]) * 1024 if item.endswith("k") else int(item)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{item!r} is not a token count like 4096 or 4k"
            ) from None
        if count < 1:
            raise argparse.ArgumentTypeError(f"{item!r}: a token count must be at least 1")
        counts.append(count)
    return tuple(sorted(set(counts)))


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_report_arguments(
        p, __doc__, "backends", "a smoke run: 32 and 64 tokens, few repeats", "default: cpu"
    )
    add_backends_argument(p)
    p.add_argument(
        "--sizes",
        type=csv_of("size", tuple(MODEL_SIZES)),
        default=tuple(MODEL_SIZES),
        help=f"comma-separated model sizes (default {','.join(MODEL_SIZES)})",
    )
    p.add_argument(
        "--lengths", type=token_counts, help="sequence lengths in tokens (default 1k,2k,4k,8k,16k)"
    )
    p.add_argument("--max-batch", type=positive_int, help="largest batch tried (default by device)")
    p.add_argument(
        "--point-time-limit",
        type=float,
        help="seconds before a point is stopped (default by device)",
    )
    p.add_argument(
        "--memory-limit-mb",
        type=positive_int,
        help="CPU only: address space a point may map beyond its own (default 8192)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time the throughput batch through torch.compile (adds its compile time)",
    )
    p.add_argument(
        "--budget-ms",
        type=float,
        default=BUDGET_MS,
        help=f"latency budget in ms (default {BUDGET_MS:g})",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="take what the partial report at --out (from a run of the same sweep cut off "
        "before its end) measured, instead of measuring it again",
    )


def limits_for(args: argparse.Namespace, device: torch.device) -> Limits:
    limits = QUICK_LIMITS if args.quick else DEVICE_LIMITS[device.type]
    changes = {}
    if args.max_batch is not None:
        changes["max_batch"] = args.max_batch
    if args.point_time_limit is not None:
        if args.point_time_limit <= 0:
            raise ValueError(f"point-time-limit: must be > 0, got {args.point_time_limit}")
        changes["point_time_limit_s"] = args.point_time_limit
    if args.memory_limit_mb is not None:
        changes["memory_limit_mb"] = args.memory_limit_mb
    return Limits(**{**asdict(limits), **changes})


def models_of(backends: tuple[str, ...]) -> list[tuple[str, str]]:
    """(backend, norm) pairs: every backend with RMSNorm, plus the LayerNorm ablation."""
    models = [(b, "rmsnorm") for b in backends]
    if NORM_ABLATION_BACKEND in backends:
        models.append((NORM_ABLATION_BACKEND, "layernorm"))
    return models


def model_name(backend: str, norm: str) -> str:
    return backend if norm == "rmsnorm" else f"{backend}-{norm}"


def over_lengths(
    lengths: tuple[int, ...], measure: Callable[[int], dict], record: Callable[[dict], None]
) -> None:
    """measure(tokens) at each length, shortest first, each row handed to record; once one runs
    out of memory or time, the longer lengths are rows saying they were not run (they would only
    fail slower)."""
    stopped: dict | None = None
    for tokens in lengths:
        row = {"tokens": tokens, **(stopped or measure(tokens))}
        if stopped is None and row["status"] in (OUT_OF_MEMORY, TIME_LIMIT):
            status = row["status"]
            stopped = {"status": status, "detail": f"not run: {status} already at {tokens} tokens"}
        record(row)


class Progress:
    """The report as the run fills it in, written out after every measurement and marked
    partial until the end; with --resume, what an earlier partial report of the same sweep
    measured is handed back instead of measured again."""

    def __init__(self, report: dict, out: Path, earlier: dict | None):
        self.report = report
        self.out = out
        self._earlier = earlier or {}

    def per_length(
        self, section: str, key: dict, measure: Callable[[int], dict]
    ) -> tuple[Callable[[int], dict], Callable[[dict], None]]:
        """For over_lengths: measure(tokens) unless the earlier report has key's row at that
        length; and the recorder that adds each row to the section under key, then saves."""

        def earlier_or_measure(tokens: int) -> dict:
            wanted = {**key, "tokens": tokens}
            for row in self._earlier.get(section, []):
                if wanted.items() <= row.items():
                    return {k: v for k, v in row.items() if k not in wanted}
            return measure(tokens)

        def record(row: dict) -> None:
            self.report[section].append({**key, **row})
            self.save()

        return earlier_or_measure, record

    def entry(self, measure: Callable[[], dict], *path: str) -> None:
        """The report's entry at path (report[a], or report[a][b]): the earlier report's, else
        measure()'s; then saves."""
        *sections, name = path
        earlier, report = self._earlier, self.report
        for section in sections:
            earlier, report = earlier.get(section) or {}, report[section]
        report[name] = measure() if earlier.get(name) is None else earlier[name]
        self.save()

    def merged(self) -> dict:
        """The report with the earlier one's rows and entries for models this run has not
        measured (a resume with other --backends keeps them), those rows first."""
        report = dict(self.report)
        rows = {"points": ("size", "model"), "norm_pairs": ("size", "backend")}
        for section, fields in rows.items():
            if section not in report:
                continue
            measured = {tuple(row[f] for f in fields) for row in report[section]}
            kept = [
                row
                for row in self._earlier.get(section, [])
                if tuple(row[f] for f in fields) not in measured
            ]
            report[section] = kept + report[section]
        for section in ("budget_search", "accuracy"):
            if section in report:
                report[section] = {**self._earlier.get(section, {}), **report[section]}
        return report

    def save(self) -> None:
        write_report_files(self.merged(), self.out)


def resumed_report(out: Path, report: dict, machine: str) -> dict | None:
    """The partial report at out, if any, checked to come from the same sweep (device, sizes,
    lengths, limits, budget) on the same kind of machine (`machine`: the GPU's name on CUDA,
    the CPU's model otherwise): resuming another would mix runs in one report, and the ratios
    read across its rows would compare two machines."""
    path = out.with_suffix(".json")
    if not path.exists():
        return None
    earlier = json.loads(path.read_text())
    if not earlier.get("partial"):
        raise ValueError(f"--resume: {path} is a finished report; give another --out")
    for key in SWEEP_IDENTITY:
        if earlier.get(key) != report[key]:
            raise ValueError(f"--resume: {path} is of another sweep (its {key} differs)")
    measured_on = earlier["hardware"]["gpu"] or earlier["hardware"]["cpu_model"]
    if measured_on != machine:
        raise ValueError(f"--resume: {path} was measured on {measured_on}, this is {machine}")
    return earlier


def sweep(args: argparse.Namespace, limits: Limits, device: torch.device, progress: Progress):
    for size in args.sizes:
        for backend, norm in models_of(args.backends):
            key = {"size": size, "model": model_name(backend, norm), "backend": backend}
            key |= {"norm": norm}
            spec = PointSpec(
                size=size,
                backend=backend,
                norm=norm,
                tokens=0,  # set per length
                device=str(device),
                max_batch=limits.max_batch,
                call_limit_s=limits.call_limit_s,
                latency_repeats=limits.latency_repeats,
                min_repeats=limits.min_repeats,
                timing_budget_s=limits.timing_budget_s,
                latency_budget_ms=args.budget_ms,
                compile=args.compile,
            )
            measure = partial(measure_sweep_point, spec, limits, device, key)
            over_lengths(progress.report["lengths"], *progress.per_length("points", key, measure))


def measure_sweep_point(
    spec: PointSpec, limits: Limits, device: torch.device, key: dict, tokens: int
) -> dict:
    memory_limit = limits.memory_limit_mb if device.type == "cpu" else None
    started = time.perf_counter()
    spec = replace(spec, tokens=tokens)
    row = run_isolated(measure_point, spec, limits.point_time_limit_s, memory_limit)
    row["wall_s"] = round(time.perf_counter() - started, 2)
    print(progress_line({**key, "tokens": tokens, **row}), file=sys.stderr, flush=True)
    return row


def progress_line(point: dict) -> str:
    head = f"{point['size']:9} {point['model']:16} {point['tokens']:6} tokens: {point['status']}"
    if point["status"] != "ok":
        return f"{head} ({point.get('detail', '')[:120]})"
    lat = point["latency"]
    rate = point.get("throughput_per_s")
    rate_text = "-" if rate is None else f"{rate:.1f}/s at batch {point['batch']}"
    line = f"{head}, p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, {rate_text}"
    # all a GPU point measured, so a sweep cut off before its report still leaves it in the log
    for key, (head_text, _) in GRAPH_LATENCIES.items():
        if key in point:
            line += f", {head_text.removesuffix(' ms')} {graph_p50_text(point, key)} ms"
    if "compiled" in point:
        line += f", compiled {compiled_text(point)}"
    if point.get("attention_tflops") is not None:
        line += f", attention {point['attention_tflops']:.1f} TFLOP/s"
    return line


def norm_pairs(args: argparse.Namespace, limits: Limits, device: torch.device, progress: Progress):
    """RMSNorm vs LayerNorm latency of the ablation backend, measured as alternating pairs."""
    if NORM_ABLATION_BACKEND not in args.backends:
        return
    for size in args.sizes:
        spec = NormPairSpec(
            size=size,
            backend=NORM_ABLATION_BACKEND,
            tokens=0,  # set per length
            device=str(device),
            max_repeats=limits.latency_repeats,
            min_repeats=limits.min_repeats,
            timing_budget_s=limits.timing_budget_s,
            call_limit_s=limits.call_limit_s,
        )
        measure = partial(measure_norm_pair_at, spec, limits.point_time_limit_s)
        key = {"size": size, "backend": NORM_ABLATION_BACKEND}
        over_lengths(progress.report["lengths"], *progress.per_length("norm_pairs", key, measure))


def measure_norm_pair_at(spec: NormPairSpec, time_limit_s: float, tokens: int) -> dict:
    row = run_isolated(measure_norm_pair, replace(spec, tokens=tokens), time_limit_s)
    print(f"norm pair {spec.size} {tokens}: {row}", file=sys.stderr, flush=True)
    return row


def budget_search(args: argparse.Namespace, limits: Limits, device: torch.device, progress):
    for backend in args.backends:
        spec = BudgetSpec(
            backend=backend,
            device=str(device),
            latency_budget_ms=args.budget_ms,
            default_samples=DEFAULT_INPUT_SAMPLES,
            max_tokens=limits.budget_search_max_tokens,
            repeats=limits.budget_search_repeats,
        )
        measure = partial(measure_budget_search, spec, 10 * limits.point_time_limit_s)
        progress.entry(measure, "budget_search", backend)


def measure_budget_search(spec: BudgetSpec, time_limit_s: float) -> dict:
    row = run_isolated(measure_budget, spec, time_limit_s)
    print(f"budget search {spec.backend}: {row}", file=sys.stderr, flush=True)
    return row


def shipped_accuracy(args: argparse.Namespace, limits: Limits, device: torch.device, progress):
    """Accuracy of each shipped model on the evaluation set of `rfcls evaluate` (its seed and
    input length), scored by rfmodel.evaluate's own functions."""
    eval_set = None

    def accuracy_of(backend: str, norm: str) -> dict:
        nonlocal eval_set
        path = shipped_weights(backend, norm)
        if path is None:
            return {"status": "not available (no weights)"}
        if eval_set is None:
            eval_set = make_eval_set(EVAL_SEED, limits.eval_per_class, DEFAULT_INPUT_SAMPLES)
        iq, labels, snr = eval_set
        bundle = load_bundle(path, attn_backend=backend, device=device)
        if bundle.classes != tuple(CLASSES):
            return {"status": f"not comparable: {path} has classes {bundle.classes}"}
        metrics = score(
            labels, snr, predict(bundle.model, bundle.feature_config, iq, device), CLASSES
        )
        return {
            "status": "ok",
            "weights": str(path),
            "version": bundle.version,
            "n_examples": metrics["n_examples"],
            "summary": metrics["summary"],
        }

    for backend, norm in models_of(args.backends):
        progress.entry(partial(accuracy_of, backend, norm), "accuracy", model_name(backend, norm))


def run(args: argparse.Namespace) -> int:
    try:
        device = pick_device(args.device)
        limits = limits_for(args, device)
    except (DeviceError, ValueError) as exc:
        print(f"rfcls bench backends: {exc}", file=sys.stderr)
        return 2
    lengths = args.lengths or (QUICK_LENGTHS if args.quick else LENGTHS)
    torch.set_num_threads(1)
    load_at_start = load_average()
    started = time.perf_counter()
    report = {
        "command": command_line(),
        "device": str(device),
        "hardware": hardware(device, load_at_start),
        "versions": versions(),
        "threads": 1 if device.type == "cpu" else None,
        "latency_budget_ms": args.budget_ms,
        "compile": args.compile,
        "lengths": list(lengths),
        "limits": asdict(limits),
        "model_sizes": {
            size: bench_config(size, "mha").to_dict() | {"dtype": dtype_name(size, device)}
            for size in args.sizes
        },
        "partial": True,
        "points": [],
        "norm_pairs": [],
        "matmul_peak": None,
        "budget_search": {},
        "accuracy": {},
    }
    out = report_out(args, "backends", device.type)
    try:
        machine = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
        earlier = resumed_report(out, report, machine) if args.resume else None
    except ValueError as exc:
        print(f"rfcls bench backends: {exc}", file=sys.stderr)
        return 2
    if earlier is not None:
        # this run's own head (command, versions, hardware), the earlier run's measurements
        report["resumed"] = {"command": earlier["command"], "hardware": earlier["hardware"]}
    progress = Progress(report, out, earlier)
    sweep(args, limits, device, progress)
    if device.type == "cuda":
        spec = MatmulSpec(str(device))
        limit_s = limits.point_time_limit_s
        progress.entry(partial(run_isolated, measure_matmul_peak, spec, limit_s), "matmul_peak")
    norm_pairs(args, limits, device, progress)
    budget_search(args, limits, device, progress)
    shipped_accuracy(args, limits, device, progress)
    report = progress.merged()
    report["hardware"] = hardware(device, load_at_start)  # with the load at the end
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    del report["partial"]
    report["charts"] = [p.name for p in write_charts(report, out)]
    write_report_files(report, out)
    print(
        f"wrote {out.with_suffix('.json')}, {out.with_suffix('.md')}, "
        f"{len(report['charts'])} charts"
    )
    return 0


def write_report_files(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))


def dtype_name(size: str, device: torch.device) -> str:
    return str(bench_dtype(size, device)).removeprefix("torch.")


def main(argv: list[str] | None = None) -> int:
    return script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
