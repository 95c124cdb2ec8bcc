"""`rfcls spectra PATH`: read a recording, compute its features, print what came out.

PATH is a SigMF recording (.sigmf-meta, .sigmf-data, .sigmf archive, or a base name with a
.sigmf-meta beside it) or a raw interleaved file whose format comes from --format or, failing
that, from its extension (.cf32/.cfile/.fc32, .ci16/.cs16/.sc16, .ci8/.cs8, .cu8).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from preprocessing.errors import InputError
from preprocessing.features import FeatureConfig, compute_features, validate_samples
from preprocessing.formats import (
    FORMATS,
    Recording,
    decode,
    raw_file_format,
    read_sigmf,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = FeatureConfig()
    parser.add_argument("path", type=Path, help="SigMF recording or raw interleaved IQ file")
    parser.add_argument(
        "--format", choices=sorted(FORMATS), help="raw sample format (default: from extension)"
    )
    parser.add_argument("--nfft", type=int, default=defaults.nfft, help="FFT size per frame")
    parser.add_argument(
        "--hop", type=int, help=f"samples between frames (default nfft/2: {defaults.hop})"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def load_recording(path: Path, fmt: str | None) -> Recording:
    fmt = raw_file_format(path, fmt)
    if fmt is None:
        return read_sigmf(path)
    samples = decode(path.read_bytes(), fmt)
    return Recording(samples=samples, sample_rate=None, center_freq=None, datatype=fmt)


def feature_ranges(features: torch.Tensor, cfg: FeatureConfig) -> dict[str, list[float]]:
    """[T, F] features -> each transform's [min, max] over the recording, in its own unit: dB
    for the spectra and amp_q (with cfg.db), FFT bins for if_q."""
    slots = features.unflatten(-1, (len(cfg.transforms), cfg.nfft))  # [T, K, nfft]
    return {
        name: [round(float(slot.min()), 2), round(float(slot.max()), 2)]
        for name, slot in zip(cfg.transforms, slots.unbind(-2), strict=True)
    }


def run(args: argparse.Namespace) -> int:
    try:
        hop = args.hop if args.hop is not None else max(1, args.nfft // 2)
        cfg = FeatureConfig(nfft=args.nfft, hop=hop)
        recording = load_recording(args.path, args.format)
        validate_samples(recording.samples, cfg)
        started = time.perf_counter()
        features = compute_features(torch.from_numpy(recording.samples)[None], cfg)
        elapsed = time.perf_counter() - started
    except (InputError, OSError) as exc:
        print(f"rfcls spectra: {exc}", file=sys.stderr)
        return 2
    summary = {
        "path": str(args.path),
        "datatype": recording.datatype,
        "samples": int(recording.samples.shape[0]),
        "sample_rate": recording.sample_rate,
        "center_freq": recording.center_freq,
        "features": cfg.to_dict(),
        "shape": list(features.shape),
        "ranges": feature_ranges(features[0], cfg),
        "seconds": round(elapsed, 6),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:>12}: {value}")
    return 0
