"""Throughput of preprocessing.spectra.power_spectra against scipy.signal.ShortTimeFFT on the same
input in the same run, and of compute_features with the default FeatureConfig.

    python -m benchmarks.spectra_throughput                  # CPU, 1 and 2 threads
    python -m benchmarks.spectra_throughput --device cuda    # writes docs/benchmarks/spectra-cuda.*

Mega-samples/s counts input IQ samples consumed (batch * samples per row) per second; each figure
is the median over --repeats timed calls after one warm-up call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy
import scipy.fft
import scipy.signal
import torch

from benchmarks.cli import report_out, script_main
from benchmarks.environment import command_line, hardware, hardware_lines, load_average, versions
from preprocessing.features import FeatureConfig, compute_features
from preprocessing.spectra import n_frames, power_spectra
from rfmodel.cli_args import positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument(
        "--threads", default="1,2", help="torch/scipy CPU threads to try, comma-separated"
    )
    p.add_argument("--batch", type=positive_int, default=8, help="recordings per call")
    p.add_argument("--samples", type=positive_int, default=1 << 18, help="IQ samples per recording")
    p.add_argument("--nfft", type=positive_int, default=256)
    p.add_argument("--hop", type=positive_int, default=128)
    p.add_argument("--repeats", type=positive_int, default=15, help="timed calls per measurement")
    p.add_argument("--no-scipy", action="store_true", help="skip the scipy reference")
    p.add_argument(
        "--out",
        type=Path,
        help="output path without suffix (default docs/benchmarks/spectra-DEVICE; with --quick, "
        "runs/bench/spectra-DEVICE)",
    )
    p.add_argument(
        "--quick", action="store_true", help="a smoke run: 3 repeats of 16384-sample recordings"
    )


def median_seconds(
    fn: Callable[[], object], repeats: int, sync: Callable[[], None]
) -> tuple[float, float]:
    """Median wall and process-CPU seconds per call. CPU time is reported beside wall time
    because the dev box is shared: other processes stretch wall time, not our CPU time."""
    fn()
    sync()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        sync()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def scipy_spectrogram(x: np.ndarray, nfft: int, hop: int) -> Callable[[], np.ndarray]:
    """Same frames as power_spectra (see tests/preprocessing/test_power_spectra.py)."""
    window = scipy.signal.get_window("hann", nfft, fftbins=True).astype(np.float32)
    stft = scipy.signal.ShortTimeFFT(window, hop, fs=1.0, fft_mode="centered")
    p1 = n_frames(x.shape[-1], nfft, hop)
    return lambda: stft.spectrogram(x, p0=0, p1=p1, k_offset=nfft // 2)


def run_benchmarks(args: argparse.Namespace, command: str) -> dict:
    load_at_start = load_average()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    gen = torch.Generator().manual_seed(0)
    x_cpu = torch.randn(args.batch, args.samples, dtype=torch.complex64, generator=gen)
    x = x_cpu.to(device)
    n_in = args.batch * args.samples
    cfg = FeatureConfig(nfft=args.nfft, hop=args.hop)
    cases: dict[str, Callable[[], object]] = {
        "power_spectra": lambda: power_spectra(x, args.nfft, args.hop),
        "power_spectra frame_rms dB": lambda: power_spectra(
            x, args.nfft, args.hop, db=True, normalize="frame_rms"
        ),
        f"compute_features ({', '.join(cfg.transforms)}; sorted "
        f"{', '.join(cfg.sorted_transforms)}; dB)": lambda: compute_features(x, cfg),
    }
    if device.type == "cpu" and not args.no_scipy:
        scipy_case = scipy_spectrogram(x_cpu.numpy(), args.nfft, args.hop)
        cases["scipy ShortTimeFFT.spectrogram"] = scipy_case
        ours = power_spectra(x_cpu, args.nfft, args.hop).double().numpy()
        ref = np.swapaxes(scipy_case(), -1, -2)
        agreement = float(np.abs(ours - ref).sum() / np.abs(ref).sum())
    else:
        agreement = None
    thread_counts = [int(t) for t in args.threads.split(",")] if device.type == "cpu" else [None]
    results = []
    threads_before = torch.get_num_threads()
    try:
        for threads in thread_counts:
            if threads is not None:
                torch.set_num_threads(threads)
            # scipy.fft's thread count for the scipy case; torch ignores it
            with scipy.fft.set_workers(threads or 1):
                for name, fn in cases.items():
                    seconds, cpu_seconds = median_seconds(fn, args.repeats, sync)
                    results.append(
                        {
                            "name": name,
                            "threads": threads,
                            "median_ms": round(seconds * 1e3, 3),
                            "msps": round(n_in / seconds / 1e6, 1),
                            "median_cpu_ms": round(cpu_seconds * 1e3, 3),
                            "repeats": args.repeats,
                        }
                    )
                    msps = results[-1]["msps"]
                    print(f"{name:36} threads={threads} {msps:8.1f} MS/s", file=sys.stderr)
    finally:
        torch.set_num_threads(threads_before)
    return {
        "command": command,
        "device": str(device),
        "hardware": hardware(device, load_at_start),
        "versions": versions(scipy=scipy.__version__),
        "input": {
            "batch": args.batch,
            "samples_per_recording": args.samples,
            "dtype": "complex64",
            "nfft": args.nfft,
            "hop": args.hop,
            "window": "hann",
            "frames_per_recording": n_frames(args.samples, args.nfft, args.hop),
        },
        "scipy_relative_l1_difference": agreement,
        "results": results,
    }


def markdown(report: dict) -> str:
    hw, inp = report["hardware"], report["input"]
    lines = [
        f"# Spectra throughput ({report['device']})",
        "",
        f"Command: `{report['command']}`",
        "",
        *hardware_lines(hw),
    ]
    if hw["gpu"]:
        lines.append("- GPU input already on the device; no transfers timed")
    lines += [
        "- versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        f"- input: {inp['batch']} x {inp['samples_per_recording']} {inp['dtype']} samples, "
        f"nfft {inp['nfft']}, hop {inp['hop']}, {inp['window']} window, "
        f"{inp['frames_per_recording']} frames per recording",
        "- MS/s = input mega-samples per second; median of "
        f"{report['results'][0]['repeats']} timed calls after a warm-up call",
    ]
    if report["scipy_relative_l1_difference"] is not None:
        lines.append(
            "- power_spectra vs scipy on this input: relative L1 difference "
            f"{report['scipy_relative_l1_difference']:.1e}"
        )
    lines += [
        "- CPU ms: process CPU time per call (all threads), beside wall time because other work",
        "  on the machine stretches wall time only",
        "",
        "| what | threads | median wall ms | MS/s | median CPU ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in report["results"]:
        threads = "-" if r["threads"] is None else r["threads"]
        lines.append(
            f"| {r['name']} | {threads} | {r['median_ms']} | {r['msps']} | {r['median_cpu_ms']} |"
        )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    if args.quick:
        args.repeats, args.samples = 3, 1 << 14
    report = run_benchmarks(args, command_line())
    out = report_out(args, "spectra", torch.device(args.device).type)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    return script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
