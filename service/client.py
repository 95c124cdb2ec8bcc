"""`rfcls classify PATH`: send a SigMF recording, a raw IQ file or a live stream on standard input
to a running service over the binary path (no JSON, no base64) in frames, and print one label per
frame.

A file is read a request at a time, so its size is not bounded by memory. Standard input (`-`) is
a receiver's output, `rtl_sdr - | rfcls classify --format cu8 -`: each frame is sent as soon as
its last sample arrives and its line printed at once, so the labels keep pace with the air."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import httpx

from preprocessing.errors import InputError, InvalidFormat
from preprocessing.formats import (
    FORMATS,
    encode,
    raw_file_format,
    read_sigmf,
    sample_format,
)

STDIN = Path("-")

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_FRAME_SAMPLES = 32_768
FRAMES_PER_REQUEST = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        type=Path,
        help="SigMF recording (.sigmf-meta/.sigmf-data), raw IQ file, or - for a live stream of "
        "raw IQ on standard input (needs --format)",
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
    source: BinaryIO  # interleaved samples in `fmt`
    fmt: str
    sample_rate: float | None
    center_freq: float | None
    n_samples: int | None  # None for a live stream

    @property
    def live(self) -> bool:
        return self.n_samples is None


def open_capture(path: Path, fmt: str | None) -> Capture:
    if path == STDIN:
        if fmt is None:
            raise InvalidFormat(
                "format", f"standard input has no extension; pass --format ({', '.join(FORMATS)})"
            )
        sample_format(fmt)
        return Capture(sys.stdin.buffer, fmt, None, None, None)
    fmt = raw_file_format(path, fmt)
    if fmt is None:
        recording = read_sigmf(path)
        samples = recording.samples
        return Capture(
            BytesIO(encode(samples, "cf32")),
            "cf32",
            recording.sample_rate,
            recording.center_freq,
            len(samples),
        )
    size = path.stat().st_size
    sample_bytes = sample_format(fmt).sample_bytes
    if size % sample_bytes:
        raise InputError(
            "path", f"{size} bytes is not a whole number of {fmt} samples ({sample_bytes} each)"
        )
    return Capture(path.open("rb"), fmt, None, None, size // sample_bytes)


def _read_up_to(source: BinaryIO, size: int) -> bytes:
    """`size` bytes, or fewer only at the end of the input: a pipe's read may return less."""
    pieces, got = [], 0
    while got < size and (piece := source.read(size - got)):
        pieces.append(piece)
        got += len(piece)
    return b"".join(pieces)


def chunks(
    capture: Capture, frame_samples: int, frames_per_request: int, min_samples: int
) -> Iterator[tuple[int, bytes]]:
    """(first sample, bytes) of requests of up to `frames_per_request` frames, read as the input
    delivers them; a trailing piece too short to classify (under one FFT frame) is left out, as
    is a stream's last incomplete sample."""
    sample_bytes = sample_format(capture.fmt).sample_bytes
    step = frame_samples * frames_per_request
    start = 0
    while body := _read_up_to(capture.source, step * sample_bytes):
        samples = len(body) // sample_bytes
        if samples % frame_samples and samples % frame_samples < min_samples:
            samples -= samples % frame_samples
        if samples:
            yield start, body[: samples * sample_bytes]
        if len(body) < step * sample_bytes:
            return
        start += step


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
        capture = open_capture(args.path, args.format)
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
    # a live stream sends each frame alone: batching frames would hold the first one back until
    # the last arrived
    frames_per_request = 1 if capture.live else FRAMES_PER_REQUEST
    size = "a live stream" if capture.live else f"{capture.n_samples} samples"
    frame = 0
    try:
        with httpx.Client(base_url=args.url, headers=headers, timeout=args.timeout) as client:
            model = _checked(client.get("/v1/model"))
            min_samples = model["limits"]["min_samples"]
            print(f"# {args.path}: {size}, model {model['version']}")
            print("frame\tstart\tlabel\tprobability" + ("\trunners-up" if args.top_k > 1 else ""))
            requests = chunks(capture, args.frame_samples, frames_per_request, min_samples)
            for start, body in requests:
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
                    print(line, flush=capture.live)
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
    except BrokenPipeError:  # the reader of the labels left (`| head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the exit's flush
        return 0
    except OSError as exc:  # the file failed while being read
        print(f"rfcls classify: cannot read {args.path}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # how a live stream is usually stopped
        return 130
    finally:
        if not capture.live:
            capture.source.close()
    if frame == 0:
        print(
            f"rfcls classify: fewer than {min_samples} samples; nothing to classify",
            file=sys.stderr,
        )
        return 1
    return 0
