"""`rfcls bench SUITE`: the benchmark suites, each a module of benchmarks/ with its own options
(add_arguments) and entry point (run)."""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

# suite -> (module, help); modules are imported only to register the options of the one chosen
SUITES: dict[str, tuple[str, str]] = {
    "backends": (
        "benchmarks.backends",
        "attention backends: throughput, memory, latency, accuracy",
    ),
    "service": ("benchmarks.service_load", "the real server under closed-loop and Poisson load"),
    "spectra": ("benchmarks.spectra_throughput", "spectrogram and feature throughput"),
    "overload": ("benchmarks.overload", "the real server at 3x its measured capacity"),
    "soak": ("benchmarks.soak", "100,000 mixed valid and invalid requests against the server"),
    "fuzz": ("benchmarks.fuzz_api", "a long schemathesis run against the server's OpenAPI schema"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    suites = parser.add_subparsers(dest="suite", required=True, metavar="SUITE")
    for name, (module_name, help_text) in SUITES.items():
        sub = suites.add_parser(name, help=help_text)
        importlib.import_module(module_name).add_arguments(sub)
        sub.set_defaults(_suite_module=module_name)


def run(args: argparse.Namespace) -> int:
    return int(importlib.import_module(args._suite_module).run(args) or 0)


def script_main(module: ModuleType, argv: list[str] | None = None) -> int:
    """`python -m benchmarks.SUITE_MODULE`: one suite module run on its own, same options."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {module.__spec__.name}", description=module.__doc__
    )
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(argv)) or 0)
