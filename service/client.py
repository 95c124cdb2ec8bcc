"""`rfcls classify PATH`: send a SigMF recording, a raw IQ file or a live stream on standard input
to a running service over the binary path (no JSON, no base64) in frames, and print one line per
frame: its label and probability, and its signal's SNR, centre and bandwidth.

A file is read a request at a time, so its size is not bounded by memory. Standard input (`-`) is
a receiver's output, `rtl_sdr - | rfcls classify --format cu8 -`: each frame is sent as soon as
its last sample arrives and its line printed at once, so the labels keep pace with the air; a
frame the service refuses for now (overloaded, 503, or out of time, 504) is skipped with a line on
standard error, and the stream goes on; a file's request is sent again after the Retry-After the
service asks for, up to --retries times. With --scan every signal in a frame is found, cut out and
classified on its own (POST /v1/scan): a line per signal, or one of dashes for a frame with none."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx

from preprocessing.errors import InputError, InvalidFormat
from preprocessing.formats import FORMATS, open_sigmf, raw_file_format, sample_format

STDIN = Path("-")

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_FRAME_SAMPLES = 32_768
FRAMES_PER_REQUEST = 8
DEFAULT_RETRIES = 5
# a Retry-After that is missing or not a number of seconds; and the most a request waits
RETRY_WAIT_S = 1.0
MAX_RETRY_WAIT_S = 30.0


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
    parser.add_argument(
        "--sample-rate",
        type=float,
        help="Hz: the signal's centre and bandwidth are printed in Hz (default: a SigMF "
        "recording's own)",
    )
    parser.add_argument(
        "--center-freq",
        type=float,
        help="Hz the receiver was tuned to: prints the signal's own centre frequency (default: a "
        "SigMF recording's own)",
    )
    parser.add_argument("--top-k", type=int, default=1, help="classes to print per frame")
    parser.add_argument(
        "--scan",
        action="store_true",
        help="find every signal in each frame and classify each on its own (a wide capture "
        "holding several), a line per signal",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP request")
    parser.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_RETRIES,
        help="times a file's request refused for now (503, 504) is sent again, each after the "
        f"service's Retry-After (default {DEFAULT_RETRIES}; a live stream skips the frame instead)",
    )


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
        # its samples in its own format, read a request at a time as a raw file's are
        recording = open_sigmf(path)
        return Capture(
            recording,
            recording.fmt,
            recording.sample_rate,
            recording.center_freq,
            recording.n_samples,
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


def request_frames(capture: Capture, frame_samples: int, limits: dict) -> int:
    """Frames a request: one for a live stream (batching would hold the first frame back until
    the last arrived), else up to FRAMES_PER_REQUEST within the service's frame and body limits,
    at least one (a frame past them is the service's to refuse)."""
    if capture.live:
        return 1
    frame_bytes = frame_samples * sample_format(capture.fmt).sample_bytes
    fitting = min(limits["max_frames_per_request"], limits["max_body_bytes"] // frame_bytes)
    return max(1, min(FRAMES_PER_REQUEST, fitting))


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


def signal_columns(sample_rate: float | None, center_freq: float | None) -> list[str]:
    """The measurement columns: in Hz where the sample rate is known, at the signal's own
    frequency where the tuning is known too, else in cycles per sample."""
    if sample_rate is None:
        return ["snr_db", "offset", "bandwidth"]
    return ["snr_db", "center_hz" if center_freq is not None else "offset_hz", "bandwidth_hz"]


def signal_cells(signal: dict | None) -> str:
    """A frame's `signal` (null where nothing stood out of the noise) as three cells."""
    if signal is None:
        return "-\t-\t-"
    if signal["bandwidth_hz"] is None:
        return f"{signal['snr_db']:.1f}\t{signal['center_offset']:+.4f}\t{signal['bandwidth']:.4f}"
    center = signal["center_freq_hz"]
    center = f"{center:.0f}" if center is not None else f"{signal['center_offset_hz']:+.0f}"
    return f"{signal['snr_db']:.1f}\t{center}\t{signal['bandwidth_hz']:.0f}"


def answer_cells(result: dict | None, top_k: int) -> str:
    """A classified frame or found signal as label, probability, its signal's cells and the
    runners-up; dashes for a scanned frame with no signal."""
    if result is None:
        return "-\t-\t" + signal_cells(None) + ("\t-" if top_k > 1 else "")
    cells = f"{result['label']}\t{result['probability']:.3f}\t" + signal_cells(result["signal"])
    if top_k > 1:
        cells += "\t" + " ".join(
            f"{c['label']}:{c['probability']:.3f}" for c in result["top_k"][1:]
        )
    return cells


class Refused(Exception):
    """The service answered with an error."""

    def __init__(self, message: str, status: int, retry_after_s: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def for_now(self) -> bool:
        """Overloaded (503) or out of time (504): the next request may well be answered."""
        return self.status in (503, 504)


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        field = f" ({error['field']})" if error.get("field") else ""
        return f"HTTP {response.status_code}: {error['message']}{field}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"


def _retry_after_s(response: httpx.Response) -> float | None:
    """The Retry-After header's delay in seconds (bounded), None where it is absent or a date."""
    try:
        seconds = float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_WAIT_S) if math.isfinite(seconds) else None


def _checked(response: httpx.Response) -> dict:
    if response.status_code != 200:
        status = response.status_code
        raise Refused(_error_message(response), status, _retry_after_s(response))
    return response.json()


def answer(client: httpx.Client, route: str, params: dict, body: bytes, retries: int) -> dict:
    """The service's answer to one request, sent again up to `retries` times while refused for
    now, each after the wait the service asked for."""
    sent_again = 0
    while True:
        try:
            return _checked(client.post(route, params=params, content=body))
        except Refused as exc:
            if not exc.for_now or sent_again == retries:
                raise
            wait_s = RETRY_WAIT_S if exc.retry_after_s is None else exc.retry_after_s
            print(f"rfcls classify: {exc}; sending again in {wait_s:g} s", file=sys.stderr)
            time.sleep(wait_s)
            sent_again += 1


def run(args: argparse.Namespace) -> int:
    try:
        capture = open_capture(args.path, args.format)
    except (InputError, OSError) as exc:
        print(f"rfcls classify: {exc}", file=sys.stderr)
        return 2
    if args.frame_samples < 1 or args.top_k < 1:
        print("rfcls classify: --frame-samples and --top-k must be at least 1", file=sys.stderr)
        return 2
    if args.retries < 0:
        print("rfcls classify: --retries must be 0 or more", file=sys.stderr)
        return 2
    if not 0 < args.timeout < math.inf:
        print("rfcls classify: --timeout must be a positive number of seconds", file=sys.stderr)
        return 2
    if args.sample_rate is not None and not 0 < args.sample_rate < math.inf:
        print("rfcls classify: --sample-rate must be a positive number of Hz", file=sys.stderr)
        return 2
    if args.center_freq is not None and not math.isfinite(args.center_freq):
        print("rfcls classify: --center-freq must be a finite number of Hz", file=sys.stderr)
        return 2
    sample_rate = args.sample_rate if args.sample_rate is not None else capture.sample_rate
    center_freq = args.center_freq if args.center_freq is not None else capture.center_freq
    headers = {"Content-Type": "application/octet-stream"}
    if key := os.environ.get("RFCLS_API_KEY"):
        headers["Authorization"] = f"Bearer {key}"
    size = "a live stream" if capture.live else f"{capture.n_samples} samples"
    route = "/v1/scan" if args.scan else "/v1/classify"
    frame = 0
    try:
        with httpx.Client(base_url=args.url, headers=headers, timeout=args.timeout) as client:
            model = _checked(client.get("/v1/model"))
            limits = model["limits"]
            min_samples = limits["min_samples"]
            frames_per_request = request_frames(capture, args.frame_samples, limits)
            print(f"# {args.path}: {size}, model {model['version']}")
            columns = [
                "frame",
                "start",
                "label",
                "probability",
                *signal_columns(sample_rate, center_freq),
            ]
            print("\t".join(columns) + ("\trunners-up" if args.top_k > 1 else ""))
            requests = chunks(capture, args.frame_samples, frames_per_request, min_samples)
            for start, body in requests:
                params = {"format": capture.fmt, "frame_samples": args.frame_samples}
                params["top_k"] = args.top_k
                if sample_rate is not None:
                    params["sample_rate"] = sample_rate
                if center_freq is not None:
                    params["center_freq"] = center_freq
                try:
                    retries = 0 if capture.live else args.retries
                    answered = answer(client, route, params, body, retries)
                except Refused as exc:
                    # a monitor goes on with the air: the frame is lost, not the stream
                    if not (capture.live and exc.for_now):
                        raise
                    print(f"rfcls classify: frame {frame} skipped: {exc}", file=sys.stderr)
                    frame += 1
                    continue
                for k, result in enumerate(answered["frames"]):
                    where = f"{frame}\t{start + k * args.frame_samples}"
                    for found in (result["signals"] or [None]) if args.scan else [result]:
                        print(f"{where}\t{answer_cells(found, args.top_k)}", flush=capture.live)
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
