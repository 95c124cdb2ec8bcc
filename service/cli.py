"""`rfcls` console script. Each subcommand lives in the module that owns the work; this file only
wires names to modules, importing them lazily so `rfcls --help` stays fast."""

from __future__ import annotations

import argparse
import importlib

# subcommand -> (module, help). Each module provides add_arguments(parser) and run(args) -> int.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("service.server", "start the HTTP service"),
    "classify": ("service.client", "send a recording to a running service"),
    "spectra": ("preprocessing.cli", "compute features of a recording and print their shape"),
    "train": ("rfmodel.train", "train a model on synthetic data"),
    "evaluate": ("rfmodel.evaluate", "evaluate a model directory on the held-out set"),
    "bench": ("benchmarks.cli", "run the benchmark suites"),
}


DESCRIPTION = "RF signal classification from IQ samples: serve, classify, train, evaluate, bench."


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rfcls", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(_module=module_name)
        # only the chosen subcommand's module is imported, to register its options
        if argv and argv[0] == name:
            importlib.import_module(module_name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C: one line, and the shell's code for it, not a traceback
        print(f"rfcls {args.command}: interrupted", file=sys.stderr)
        return 130
