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

from preprocessing.errors import InputError, InvalidFormat
from preprocessing.features import FeatureConfig, compute_features, validate_samples
from preprocessing.formats import FORMATS, Recording, decode, is_sigmf_path, read_sigmf

RAW_EXTENSIONS = {
    ".cf32": "cf32",
    ".cfile": "cf32",
    ".fc32": "cf32",
    ".ci16": "ci16",
    ".cs16": "ci16",
    ".sc16": "ci16",
    ".ci8": "ci8",
    ".cs8": "ci8",
    ".cu8": "cu8",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = FeatureConfig()
    parser.add_argument("path", type=Path, help="SigMF recording or raw interleaved IQ file")
    parser.add_argument(
        "--format", choices=sorted(FORMATS), help="raw sample format (default: from extension)"
    )
    parser.add_argument("--nfft", type=int, default=defaults.nfft, help="FFT size per frame")
    parser.add_argument("--hop", type=int, default=defaults.hop, help="samples between frames")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def load_recording(path: Path, fmt: str | None) -> Recording:
    if is_sigmf_path(path):
        if fmt is not None:  # else the metadata's JSON would be read as samples
            raise InvalidFormat("format", "a SigMF recording names its own datatype; drop --format")
        return read_sigmf(path)
    fmt = fmt or RAW_EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidFormat(
            "format",
            f"cannot tell the sample format of {path.name} from its extension; "
            f"pass --format ({', '.join(FORMATS)})",
        )
    samples = decode(path.read_bytes(), fmt)
    return Recording(samples=samples, sample_rate=None, center_freq=None, datatype=fmt)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = FeatureConfig(nfft=args.nfft, hop=args.hop)
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
        "min_db": round(float(features.min()), 2),
        "max_db": round(float(features.max()), 2),
        "seconds": round(elapsed, 6),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:>12}: {value}")
    return 0
