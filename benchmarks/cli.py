"""`rfcls bench SUITE`: the benchmark suites, each a module of benchmarks/ with its own options
(add_arguments) and entry point (run)."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType

import torch

from rfmodel.cli_args import DEVICE_CHOICES, DeviceError, pick_device

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
# where a --quick run writes by default: a smoke test must not overwrite a committed report
QUICK_RUNS = Path("runs") / "bench"
OWN_PACKAGES = {"benchmarks", "preprocessing", "rfmodel", "service"}
# suite -> (module, help); modules are imported only to register the options of the one chosen
SUITES: dict[str, tuple[str, str]] = {
    "backends": (
        "benchmarks.backends",
        "attention backends: throughput, memory, latency, accuracy",
    ),
    "service": ("benchmarks.service_load", "the real server under closed-loop and Poisson load"),
    "spectra": ("benchmarks.spectra_throughput", "spectrogram and feature throughput"),
    "batching": (
        "benchmarks.batching",
        "the real server one request at a time, and with dynamic batching on and off under load",
    ),
    "overload": ("benchmarks.overload", "the real server at 3x its measured capacity"),
    "soak": ("benchmarks.soak", "100,000 mixed valid and invalid requests against the server"),
    "fuzz": ("benchmarks.fuzz_api", "a long schemathesis run against the server's OpenAPI schema"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    suites = parser.add_subparsers(dest="suite", required=True, metavar="SUITE")
    for name, (module_name, help_text) in SUITES.items():
        sub = suites.add_parser(name, help=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or exc.name.partition(".")[0] in OWN_PACKAGES:
                raise
            # a suite's own dependency (fuzz: schemathesis, a dev extra) must not take the other
            # suites down with it on a machine that lacks it
            missing = f"rfcls bench {name} needs {exc.name}: pip install -e '.[dev]'"
            sub.set_defaults(_missing=missing)
            continue
        module.add_arguments(sub)
        sub.set_defaults(_suite_module=module_name)


def run(args: argparse.Namespace) -> int:
    if missing := getattr(args, "_missing", None):
        print(missing, file=sys.stderr)
        return 2
    return int(importlib.import_module(args._suite_module).run(args) or 0)


def add_report_arguments(
    p: argparse.ArgumentParser, doc: str | None, report: str, quick_help: str, device_help: str
) -> None:
    """The options of a suite that writes docs/benchmarks/REPORT-DEVICE.*: its docstring as the
    description, --device (default cpu), --out and --quick."""
    p.description = doc
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--device", choices=DEVICE_CHOICES, default="cpu", help=device_help)
    p.add_argument(
        "--out",
        type=Path,
        help=f"output path without suffix (default docs/benchmarks/{report}-DEVICE; with "
        f"--quick, {QUICK_RUNS}/{report}-DEVICE)",
    )
    p.add_argument("--quick", action="store_true", help=quick_help)


def report_out(args: argparse.Namespace, report: str, device_type: str) -> Path:
    """--out, else the committed report's path, or under runs/bench/ for a --quick run."""
    if args.out is not None:
        return args.out
    return (QUICK_RUNS if args.quick else DOCS) / f"{report}-{device_type}"


def device_or_none(args: argparse.Namespace, suite: str) -> torch.device | None:
    """The --device asked for, or None once the reason it is not here is said (exit status 2)."""
    try:
        return pick_device(args.device)
    except DeviceError as exc:
        print(f"rfcls bench {suite}: {exc}", file=sys.stderr)
        return None


def script_main(module: ModuleType, argv: list[str] | None = None) -> int:
    """`python -m benchmarks.SUITE_MODULE`: one suite module run on its own, same options."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {module.__spec__.name}", description=module.__doc__
    )
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(argv)) or 0)
