"""Where a benchmark ran: CPU model, usable cores, machine load, GPU and library versions. Every
benchmark records them the same way so result files can be compared."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from rfmodel.cpus import usable_cpus

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in lscpu.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def hardware(device: torch.device, load_at_start: list[float]) -> dict:
    """Call at the end of a run: the load average is taken at both ends because the machine is
    shared and other work stretches wall-clock times."""
    return {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": load_average(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


# the same package goes by either name, depending on where torch came from
TRITON_DISTRIBUTIONS = ("triton", "pytorch-triton")


def versions(**extra: str) -> dict[str, str]:
    found = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    # Triton's version names the GPU fast path's kernels (rfmodel.kernels) a run used
    triton = next((v for name in TRITON_DISTRIBUTIONS if (v := distribution_version(name))), None)
    return {**found, **({"triton": triton} if triton else {}), **extra}


def distribution_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def hardware_lines(hw: dict) -> list[str]:
    """Markdown bullets describing `hardware(...)`: the CPU, and the GPU where there was one."""
    cpu = (
        f"- CPU: {hw['cpu_model']}, {hw['usable_cpus']} usable of {hw['logical_cpus']} logical "
        f"CPUs; load average (1, 5, 15 min) {hw['load_average_at_start']} at the start, "
        f"{hw['load_average_at_end']} at the end"
    )
    return [cpu, *([f"- GPU: {hw['gpu']}"] if hw["gpu"] else [])]


def report_head(title: str, report: dict) -> list[str]:
    """The first lines of a report's markdown: title, command and run time, hardware, versions."""
    elapsed = report.get("elapsed_s")  # none in a partial report
    return [
        f"# {title}",
        "",
        f"Command: `{report['command']}` "
        + ("(not finished)" if elapsed is None else f"({elapsed} s)"),
        "",
        *hardware_lines(report["hardware"]),
        "- versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
    ]


def command_line() -> str:
    """The command that started this process, as a user would type it to reproduce a result."""
    program = Path(sys.argv[0]).resolve()
    if program.name == "rfcls":
        return shlex.join(["rfcls", *sys.argv[1:]])
    if program.suffix == ".py" and program.is_relative_to(ROOT):
        module = ".".join(program.relative_to(ROOT).with_suffix("").parts)
        return shlex.join(["python", "-m", module, *sys.argv[1:]])
    return shlex.join(sys.argv)
