"""`rfcls classify` against a running service: SigMF and raw files, frames, errors."""

from __future__ import annotations

import http.server
import json
import os
import queue
import subprocess
import sys
import threading

import httpx
import numpy as np
import pytest
from live_servers import ROOT

from preprocessing.formats import decode, encode, read_sigmf, write_sigmf
from service.client import MAX_RETRY_WAIT_S, _retry_after_s

RNG = np.random.default_rng(11)


def classify_command(*args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RFCLS_")}
    return dict(args=[sys.executable, "-m", "service", "classify", *args], cwd=ROOT, env=env)


def rfcls_classify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(**classify_command(*args), capture_output=True, text=True, timeout=60)


def rows(stdout: str) -> list[list[str]]:
    lines = [line for line in stdout.splitlines() if not line.startswith("#")]
    assert lines[0].split("\t")[:4] == ["frame", "start", "label", "probability"]
    return [line.split("\t") for line in lines[1:]]


def server_labels(url: str, iq: np.ndarray, frame_samples: int) -> list[str]:
    r = httpx.post(
        f"{url}/v1/classify?format=cf32&frame_samples={frame_samples}",
        content=encode(iq, "cf32"),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    return [f["label"] for f in r.json()["frames"]]


def noise(n: int) -> np.ndarray:
    return (0.3 * (RNG.standard_normal(n) + 1j * RNG.standard_normal(n))).astype(np.complex64)


def test_sigmf_recording(server, tmp_path):
    iq = noise(3 * 4096 + 1000)  # the 1000-sample tail is a frame of its own
    meta = write_sigmf(tmp_path / "capture", iq, 1e6, 915e6, datatype="ci16_le")
    result = rfcls_classify(
        str(meta), "--url", server.url, "--frame-samples", "4096", "--top-k", "2"
    )
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    assert [r[0] for r in table] == ["0", "1", "2", "3"]
    assert [int(r[1]) for r in table] == [0, 4096, 8192, 12288]
    expected = server_labels(server.url, read_sigmf(meta).samples, 4096)
    assert [r[2] for r in table] == expected
    assert all(0 < float(r[3]) <= 1 and ":" in r[7] for r in table)
    # the recording's rate and tuning put the signal columns in Hz, at its own frequency
    assert result.stdout.splitlines()[1].split("\t")[4:7] == ["snr_db", "center_hz", "bandwidth_hz"]


def test_raw_file_drops_a_tail_shorter_than_one_fft(server, tmp_path):
    raw = encode(noise(5 * 1024 + 10), "ci8")  # 10 samples < nfft 64: left out
    path = tmp_path / "capture.ci8"
    path.write_bytes(raw)
    # the format from the extension, as rfcls spectra takes it
    result = rfcls_classify(str(path), "--url", server.url, "--frame-samples", "1024")
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    assert len(table) == 5
    assert [r[2] for r in table] == server_labels(server.url, decode(raw, "ci8")[: 5 * 1024], 1024)


def test_a_file_is_sent_in_requests_within_the_services_limits(server, tmp_path):
    """Five frames of 256 KiB are past the server's 1 MiB body limit in one request (its
    /v1/model says so): the client sends four, then one."""
    path = tmp_path / "capture.cf32"
    iq = noise(5 * 32_768)
    path.write_bytes(encode(iq, "cf32"))
    result = rfcls_classify(str(path), "--url", server.url, "--frame-samples", "32768")
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    assert [int(r[1]) for r in table] == [k * 32_768 for k in range(5)]
    assert [r[2] for r in table] == server_labels(server.url, iq[: 4 * 32_768], 32_768) + (
        server_labels(server.url, iq[4 * 32_768 :], 32_768)
    )


def test_live_stream_answers_each_frame_as_it_arrives(server):
    """On standard input the first frame is answered while the stream is still open."""
    iq = noise(2 * 4096 + 2048)  # the 2048-sample tail is a frame of its own
    raw = encode(iq, "cu8")
    command = classify_command(
        "-", "--format", "cu8", "--url", server.url, "--frame-samples", "4096"
    )
    proc = subprocess.Popen(
        **command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=False
    )
    lines: queue.Queue[str] = queue.Queue()

    def read_lines():
        for line in proc.stdout:
            lines.put(line.decode())

    threading.Thread(target=read_lines, daemon=True).start()
    try:
        proc.stdin.write(raw[: 4096 * 2 + 100])  # one frame and a part of the next
        proc.stdin.flush()
        header = [lines.get(timeout=30) for _ in range(2)]
        assert header[0].startswith("# -: a live stream") and header[1].startswith("frame\t")
        first = lines.get(timeout=30).rstrip("\n").split("\t")
        expected = server_labels(server.url, decode(raw, "cu8"), 4096)
        assert first[:3] == ["0", "0", expected[0]]
        proc.stdin.write(raw[4096 * 2 + 100 :] + b"\x80")  # and half a sample, left out
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        proc.kill()
    rest = [lines.get(timeout=5).split("\t") for _ in range(2)]
    assert [r[:3] for r in rest] == [["1", "4096", expected[1]], ["2", "8192", expected[2]]]
    assert lines.empty()


def test_signal_columns_follow_what_is_known_of_the_capture(server, tmp_path):
    """A raw file says nothing of its rate: cycles per sample, unless --sample-rate is given."""
    n, fs, tuned = 8192, 1e6, 100e6
    tone = np.exp(2j * np.pi * 0.25 * np.arange(n)) + noise(n)
    path = tmp_path / "capture.cf32"
    path.write_bytes(encode(tone.astype(np.complex64), "cf32"))
    args = [str(path), "--url", server.url, "--frame-samples", "4096"]
    plain = rfcls_classify(*args)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines()[1].split("\t")[4:] == ["snr_db", "offset", "bandwidth"]
    assert [float(r[5]) for r in rows(plain.stdout)] == pytest.approx([0.25] * 2, abs=1 / 128)
    tuned_run = rfcls_classify(*args, "--sample-rate", str(fs), "--center-freq", str(tuned))
    assert tuned_run.returncode == 0, tuned_run.stderr
    table = rows(tuned_run.stdout)
    assert [float(r[5]) for r in table] == pytest.approx([tuned + 0.25 * fs] * 2, abs=fs / 128)
    assert all(float(r[4]) > 10 and 0 < float(r[6]) < fs / 32 for r in table)
    only_noise = tmp_path / "noise.cf32"
    only_noise.write_bytes(encode(noise(4096), "cf32"))
    assert rows(rfcls_classify(str(only_noise), "--url", server.url).stdout)[0][4:7] == ["-"] * 3


def test_scan_prints_a_line_per_signal_and_dashes_for_a_frame_with_none(server, tmp_path):
    """Frame 0 holds two tones, frame 1 only noise: two lines, then one of dashes, each line's
    label and probability the server's for that signal."""
    n = 8192
    t = np.arange(n)
    tones = np.exp(2j * np.pi * -0.3 * t) + np.exp(2j * np.pi * 0.2 * t) + noise(n)
    capture = np.concatenate([tones.astype(np.complex64), noise(n)])
    path = tmp_path / "capture.cf32"
    path.write_bytes(encode(capture, "cf32"))
    result = rfcls_classify(str(path), "--url", server.url, "--frame-samples", str(n), "--scan")
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    assert [r[:2] for r in table] == [["0", "0"], ["0", "0"], ["1", str(n)]]
    assert [float(r[5]) for r in table[:2]] == pytest.approx([-0.3, 0.2], abs=2 / 256)
    assert table[2][2:] == ["-"] * 5
    r = httpx.post(
        f"{server.url}/v1/scan?format=cf32&frame_samples={n}",
        content=encode(capture, "cf32"),
        headers={"Content-Type": "application/octet-stream"},
    )
    signals = r.json()["frames"][0]["signals"]
    assert [row[2:4] for row in table[:2]] == [
        [s["label"], f"{s['probability']:.3f}"] for s in signals
    ]


def test_live_stream_needs_a_format(server):
    result = subprocess.run(
        **classify_command("-", "--url", server.url), input="", capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "standard input has no extension; pass --format" in result.stderr


@pytest.fixture
def overloaded_every_other_request():
    """A stand-in rfcls server whose every second POST /v1/classify is 503 (overloaded)."""
    posts = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def reply(self, status: int, body: dict, headers: dict | None = None):
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            limits = {"min_samples": 64, "max_frames_per_request": 64, "max_body_bytes": 2**24}
            self.reply(200, {"version": "stand-in", "limits": limits})

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            posts.append(self.path)
            if len(posts) % 2 == 0:
                busy = {"error": {"code": "overloaded", "message": "busy", "field": None}}
                self.reply(503, busy, {"Retry-After": "0"})
                return
            frame = {"label": "qpsk", "probability": 0.9, "top_k": [], "signal": None}
            self.reply(200, {"frames": [frame]})

        def log_message(self, *args):
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{httpd.server_address[1]}", posts
        httpd.shutdown()


def test_a_live_stream_skips_a_frame_the_service_is_too_busy_for(
    overloaded_every_other_request, tmp_path
):
    url, posts = overloaded_every_other_request
    command = classify_command("-", "--format", "cf32", "--url", url, "--frame-samples", "256")
    raw = encode(noise(3 * 256), "cf32")
    result = subprocess.run(**command, input=raw, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [r[:3] for r in rows(result.stdout.decode())] == [
        ["0", "0", "qpsk"],
        ["2", "512", "qpsk"],
    ]
    assert "frame 1 skipped: HTTP 503: busy" in result.stderr.decode()
    assert len(posts) == 3
    # a file is not a stream: its request is sent again after the Retry-After the service gave
    path = tmp_path / "capture.cf32"
    path.write_bytes(raw)
    answered = rfcls_classify(str(path), "--url", url, "--frame-samples", "256")
    assert answered.returncode == 0, answered.stderr
    assert len(posts) == 5  # all three frames in one request, refused, then answered
    assert "HTTP 503: busy; sending again in 0 s" in answered.stderr
    assert [r[:3] for r in rows(answered.stdout)] == [["0", "0", "qpsk"]]  # the stand-in's one
    # with no retries the refusal ends the run, as any other
    refused = rfcls_classify(str(path), "--url", url, "--frame-samples", "256", "--retries", "0")
    assert len(posts) == 6
    assert refused.returncode == 1 and "the service refused: HTTP 503" in refused.stderr


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("2", 2.0),
        ("3600", MAX_RETRY_WAIT_S),  # a client is not parked for an hour
        ("-5", 0.0),
        ("nan", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),  # the date form: the default wait
        (None, None),
    ],
)
def test_retry_after_is_read_as_seconds_and_bounded(header, seconds):
    headers = {} if header is None else {"Retry-After": header}
    assert _retry_after_s(httpx.Response(503, headers=headers)) == seconds


@pytest.fixture
def another_http_server():
    """An HTTP server that is not rfcls: 200 and a page of text for any GET."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>hello</html>")

        def log_message(self, *args):
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
        httpd.shutdown()


@pytest.mark.parametrize(
    ("setup", "code", "message"),
    [
        ("odd", 2, "not a whole number of cf32 samples"),
        ("no extension", 2, "pass --format"),
        ("unreachable", 1, "cannot reach"),
        ("not a URL", 1, "cannot reach"),
        ("not rfcls", 1, "is not an rfcls service"),
        ("bad timeout", 2, "--timeout must be a positive number"),
        ("bad sample rate", 2, "--sample-rate must be a positive number"),
        ("bad retries", 2, "--retries must be 0 or more"),
        ("too_large", 1, "the service refused: HTTP 413"),
    ],
)
def test_errors(server, another_http_server, tmp_path, setup, code, message):
    path = tmp_path / "capture.cf32"
    url = server.url
    args = []
    if setup == "odd":
        path.write_bytes(b"\0" * 13)
    elif setup == "no extension":
        path = tmp_path / "capture.dat"
        path.write_bytes(encode(noise(70_000), "cf32"))
    else:
        path.write_bytes(encode(noise(70_000), "cf32"))
        if setup == "unreachable":
            url = "http://127.0.0.1:9"
        elif setup == "not a URL":
            url = "http://[::1"
        elif setup == "not rfcls":
            url = another_http_server
        elif setup == "bad timeout":
            args = ["--timeout", "nan"]
        elif setup == "bad sample rate":
            args = ["--sample-rate", "0"]
        elif setup == "bad retries":
            args = ["--retries", "-1"]
        else:
            args = ["--frame-samples", "70000"]  # above the server's RFCLS_MAX_SAMPLES
    result = rfcls_classify(str(path), "--url", url, *args)
    assert result.returncode == code
    assert message in result.stderr and "Traceback" not in result.stderr
