"""`rfcls classify PATH`: send a SigMF recording or a raw IQ file to a running service over the
binary path (no JSON, no base64) in frames, and print one label per frame."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from preprocessing.errors import InputError
from preprocessing.formats import (
    FORMATS,
    encode,
    raw_file_format,
    read_sigmf,
    sample_format,
)

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_FRAME_SAMPLES = 32_768
FRAMES_PER_REQUEST = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path", type=Path, help="SigMF recording (.sigmf-meta/.sigmf-data) or raw IQ"
    )
    parser.add_argument(
        "--url", default=DEFAULT_URL, help=f"service address (default {DEFAULT_URL})"
    )
    parser.add_argument(
        "--format",
        choices=list(FORMATS),
        help="sample format of a raw file (default: from its extension, as rfcls spectra); a "
        "SigMF recording names its own",
    )
    parser.add_argument(
        "--frame-samples",
        type=int,
        default=DEFAULT_FRAME_SAMPLES,
        help=f"samples per classified frame (default {DEFAULT_FRAME_SAMPLES})",
    )
    parser.add_argument("--top-k", type=int, default=1, help="classes to print per frame")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP request")


@dataclass(frozen=True)
class Capture:
    data: bytes  # interleaved samples in `fmt`
    fmt: str
    sample_rate: float | None
    center_freq: float | None

    @property
    def n_samples(self) -> int:
        return len(self.data) // sample_format(self.fmt).sample_bytes


def read_capture(path: Path, fmt: str | None) -> Capture:
    fmt = raw_file_format(path, fmt)
    if fmt is None:
        recording = read_sigmf(path)
        return Capture(
            encode(recording.samples, "cf32"), "cf32", recording.sample_rate, recording.center_freq
        )
    data = path.read_bytes()
    sample_bytes = sample_format(fmt).sample_bytes
    if len(data) % sample_bytes:
        raise InputError(
            "path",
            f"{len(data)} bytes is not a whole number of {fmt} samples ({sample_bytes} each)",
        )
    return Capture(data, fmt, None, None)


def chunks(capture: Capture, frame_samples: int, min_samples: int) -> Iterator[tuple[int, bytes]]:
    """(first sample, bytes) of requests of up to FRAMES_PER_REQUEST frames; a trailing piece too
    short to classify (under one FFT frame) is left out."""
    sample_bytes = sample_format(capture.fmt).sample_bytes
    usable = capture.n_samples
    if usable % frame_samples and usable % frame_samples < min_samples:
        usable -= usable % frame_samples
    step = frame_samples * FRAMES_PER_REQUEST
    for start in range(0, usable, step):
        end = min(start + step, usable)
        yield start, capture.data[start * sample_bytes : end * sample_bytes]


class Refused(Exception):
    """The service answered with an error."""


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        field = f" ({error['field']})" if error.get("field") else ""
        return f"HTTP {response.status_code}: {error['message']}{field}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"


def _checked(response: httpx.Response) -> dict:
    if response.status_code != 200:
        raise Refused(_error_message(response))
    return response.json()


def run(args: argparse.Namespace) -> int:
    try:
        capture = read_capture(args.path, args.format)
    except (InputError, OSError) as exc:
        print(f"rfcls classify: {exc}", file=sys.stderr)
        return 2
    if args.frame_samples < 1 or args.top_k < 1:
        print("rfcls classify: --frame-samples and --top-k must be at least 1", file=sys.stderr)
        return 2
    if not 0 < args.timeout < math.inf:
        print("rfcls classify: --timeout must be a positive number of seconds", file=sys.stderr)
        return 2
    headers = {"Content-Type": "application/octet-stream"}
    if key := os.environ.get("RFCLS_API_KEY"):
        headers["Authorization"] = f"Bearer {key}"
    try:
        with httpx.Client(base_url=args.url, headers=headers, timeout=args.timeout) as client:
            model = _checked(client.get("/v1/model"))
            min_samples = model["limits"]["min_samples"]
            print(f"# {args.path}: {capture.n_samples} samples, model {model['version']}")
            print("frame\tstart\tlabel\tprobability" + ("\trunners-up" if args.top_k > 1 else ""))
            frame = 0
            for start, body in chunks(capture, args.frame_samples, min_samples):
                params = {"format": capture.fmt, "frame_samples": args.frame_samples}
                params["top_k"] = args.top_k
                if capture.sample_rate is not None:
                    params["sample_rate"] = capture.sample_rate
                if capture.center_freq is not None:
                    params["center_freq"] = capture.center_freq
                answer = _checked(client.post("/v1/classify", params=params, content=body))
                for k, result in enumerate(answer["frames"]):
                    line = f"{frame}\t{start + k * args.frame_samples}\t{result['label']}"
                    line += f"\t{result['probability']:.3f}"
                    if args.top_k > 1:
                        others = result["top_k"][1:]
                        line += "\t" + " ".join(
                            f"{c['label']}:{c['probability']:.3f}" for c in others
                        )
                    print(line)
                    frame += 1
    except Refused as exc:
        print(f"rfcls classify: the service refused: {exc}", file=sys.stderr)
        return 1
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        print(f"rfcls classify: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    except (ValueError, KeyError, TypeError) as exc:  # JSON of another shape, or not JSON at all
        print(f"rfcls classify: {args.url} is not an rfcls service: {exc!r}", file=sys.stderr)
        return 1
    if frame == 0:
        print(
            f"rfcls classify: fewer than {min_samples} samples; nothing to classify",
            file=sys.stderr,
        )
        return 1
    return 0
