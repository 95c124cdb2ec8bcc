"""POST /v1/classify, GET /v1/model and the probes, against a real `rfcls serve` subprocess.

The served probabilities are checked against the model run directly in this process on the same
decoded samples, one frame at a time: that covers decoding, batching (mixed lengths are padded and
masked in the service), row order and the softmax."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import shutil
import socket
import subprocess
import zlib

import httpx
import numpy as np
import pytest
import torch
from live_servers import TINY_CLASSES, metric
from pydantic import ValidationError

from preprocessing.formats import FORMATS, decode, encode
from preprocessing.occupancy import occupied_band
from rfmodel.bundle import load_bundle
from service.protocol.limits import MAX_GZIP_MEMBERS
from service.protocol.v1_schemas import ClassifyRequest, SampleFormat
from service.settings import Settings

RNG = np.random.default_rng(20240611)


def noisy_tone(n: int, amplitude: float = 0.4) -> np.ndarray:
    t = np.arange(n)
    tone = np.exp(2j * np.pi * RNG.uniform(-0.4, 0.4) * t)
    noise = RNG.standard_normal(n) + 1j * RNG.standard_normal(n)
    return (amplitude * (0.7 * tone + 0.2 * noise)).astype(np.complex64)


def check_answer(answer: dict, expected: np.ndarray, top_k: int = 3) -> None:
    assert answer["backend"] == "mha"
    assert answer["model_version"].startswith("mha-rmsnorm-")
    assert len(answer["frames"]) == len(expected)
    for result, probs in zip(answer["frames"], expected, strict=True):
        ranked = [(c["label"], c["probability"]) for c in result["top_k"]]
        assert len(ranked) == top_k
        best = int(np.argmax(probs))
        assert result["label"] == TINY_CLASSES[best] == ranked[0][0]
        assert result["probability"] == pytest.approx(probs[best], abs=1e-5)
        for label, p in ranked:
            assert p == pytest.approx(probs[TINY_CLASSES.index(label)], abs=1e-5)
        assert [p for _, p in ranked] == sorted((p for _, p in ranked), reverse=True)
    timings = answer["timings_ms"]
    assert timings["total"] >= timings["inference"] > 0
    assert timings["preprocess"] > 0 and timings["queue"] >= 0


def test_sample_formats_match_preprocessing():
    assert set(SampleFormat.__args__) == set(FORMATS)


def test_json_base64_every_format_in_one_request(server, reference):
    # different lengths in one request: the service pads and masks them in one batch
    lengths = {"cf32": 4096, "ci16": 3000, "ci8": 1500, "cu8": 700}
    frames, decoded = [], []
    for fmt, n in lengths.items():
        raw = encode(noisy_tone(n), fmt)
        frames.append({"data": base64.b64encode(raw).decode(), "format": fmt})
        decoded.append(decode(raw, fmt))
    r = httpx.post(f"{server.url}/v1/classify", json={"frames": frames, "top_k": 3})
    assert r.status_code == 200, r.text
    answer = r.json()
    check_answer(answer, reference(decoded))
    assert [f["n_samples"] for f in answer["frames"]] == list(lengths.values())


def test_json_iq_lists_and_metadata_echo(server, reference):
    iq = noisy_tone(1024)
    body = {
        "frames": [{"i": iq.real.tolist(), "q": iq.imag.tolist()}],
        "sample_rate": 2.4e6,
        "center_freq": 433.92e6,
        "top_k": 5,
    }
    r = httpx.post(f"{server.url}/v1/classify", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    check_answer(answer, reference([iq]), top_k=5)
    assert answer["sample_rate"] == 2.4e6 and answer["center_freq"] == 433.92e6


def test_each_frame_reports_its_occupied_band(server):
    """The measurements are preprocessing.occupancy's on each decoded frame, in Hz with a
    sample rate, and at the signal's own frequency with a tuned one."""
    n, fs, tuned = 4096, 2.4e6, 433.92e6
    t = np.arange(n)
    tone = np.exp(2j * np.pi * 0.1 * t) + 0.05 * (
        RNG.standard_normal(n) + 1j * RNG.standard_normal(n)
    )
    noise = RNG.standard_normal(n) + 1j * RNG.standard_normal(n)
    frames = [f.astype(np.complex64) for f in (tone, noise, noisy_tone(300), noisy_tone(200))]
    body = {
        "frames": [
            {"data": base64.b64encode(encode(f, "cf32")).decode(), "format": "cf32"} for f in frames
        ],
        "sample_rate": fs,
        "center_freq": tuned,
    }
    before = httpx.get(f"{server.url}/metrics").text
    r = httpx.post(f"{server.url}/v1/classify", json=body)
    assert r.status_code == 200, r.text
    signals = [f["signal"] for f in r.json()["frames"]]
    after = httpx.get(f"{server.url}/metrics").text
    for name, count in (("frames_without_signal_total", 2), ("signal_snr_db_count", 2)):
        added = metric(after, f"rfcls_{name}", backend="mha")
        assert added - metric(before, f"rfcls_{name}", backend="mha") == count
    expected = occupied_band(torch.from_numpy(frames[0])[None])[0].tolist()
    got = [signals[0][k] for k in ("center_offset", "bandwidth", "snr_db")]
    assert got == pytest.approx(expected, rel=1e-4)
    bin_ = 1 / 128  # the Welch resolution at 4,096 samples
    assert signals[0]["center_offset"] == pytest.approx(0.1, abs=bin_)
    assert signals[0]["center_freq_hz"] == pytest.approx(tuned + 0.1 * fs, abs=bin_ * fs)
    assert signals[0]["bandwidth_hz"] == pytest.approx(signals[0]["bandwidth"] * fs)
    assert signals[0]["snr_db"] > 20
    assert signals[1] is None  # white noise: nothing stands out
    assert signals[2] is not None and signals[3] is None  # 300 samples measured, 200 too few


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_binary_every_format_cut_into_frames(server, reference, fmt):
    raw = encode(noisy_tone(2 * 1024 + 600), fmt)
    r = httpx.post(
        f"{server.url}/v1/classify",
        params={"format": fmt, "frame_samples": 1024, "top_k": 2},
        content=raw,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    iq = decode(raw, fmt)
    pieces = [iq[:1024], iq[1024:2048], iq[2048:]]  # the last frame holds the remainder
    answer = r.json()
    check_answer(answer, reference(pieces), top_k=2)
    assert [f["n_samples"] for f in answer["frames"]] == [1024, 1024, 600]


def test_a_tail_shorter_than_one_fft_is_left_out_not_the_request_refused(server, reference):
    iq = noisy_tone(2 * 1024 + 10)  # 10 samples: under the tiny model's FFT of 64
    r = httpx.post(
        f"{server.url}/v1/classify",
        params={"format": "cf32", "frame_samples": 1024},
        content=encode(iq, "cf32"),
        headers=BINARY,
    )
    assert r.status_code == 200, r.text
    check_answer(r.json(), reference([iq[:1024], iq[1024:2048]]))
    assert [f["n_samples"] for f in r.json()["frames"]] == [1024, 1024]


def test_binary_whole_body_is_one_frame(server, reference):
    iq = noisy_tone(5000)
    r = httpx.post(
        f"{server.url}/v1/classify?format=cf32",
        content=encode(iq, "cf32"),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    check_answer(r.json(), reference([iq]))


# x-gzip: RFC 9110 8.4.1.3 asks a recipient to take it for gzip
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "x-gzip"])
def test_compressed_binary_body(server, reference, encoding):
    iq = noisy_tone(5000)
    raw = encode(iq, "cf32")
    body = zlib.compress(raw) if encoding == "deflate" else gzip.compress(raw)
    r = httpx.post(
        f"{server.url}/v1/classify?format=cf32",
        content=body,
        headers={"Content-Type": "application/octet-stream", "Content-Encoding": encoding},
    )
    assert r.status_code == 200, r.text
    check_answer(r.json(), reference([iq]))


def test_a_gzip_body_of_several_members_is_read_whole(server, reference):
    """RFC 1952: a gzip file is a series of members, e.g. two gzip files concatenated."""
    iq = noisy_tone(5000)
    raw = encode(iq, "cf32")
    r = httpx.post(
        f"{server.url}/v1/classify?format=cf32&frame_samples=2500",
        content=gzip.compress(raw[:12345]) + gzip.compress(raw[12345:]),
        headers={"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"},
    )
    assert r.status_code == 200, r.text
    check_answer(r.json(), reference([iq[:2500], iq[2500:]]))


GOOD_B64 = base64.b64encode(encode(noisy_tone(512), "cf32")).decode()
NAN_CF32 = np.full(512, np.nan + 0j, dtype=np.complex64).tobytes()
BINARY = {"Content-Type": "application/octet-stream"}


def binary(params: str, body: bytes) -> dict:
    return {"url": f"/v1/classify?{params}", "content": body, "headers": BINARY}


def json_body(body: object) -> dict:
    return {"url": "/v1/classify", "json": body}


BAD_REQUESTS = {
    "unknown format (JSON)": (
        json_body({"frames": [{"data": GOOD_B64, "format": "cf64"}]}),
        422,
        "frames.0.format",
    ),
    "unknown format (binary)": (binary("format=cf64", b"\0" * 4096), 422, "format"),
    "format missing (binary)": (binary("", b"\0" * 4096), 422, "format"),
    "odd byte count (binary)": (binary("format=cf32", b"\0" * 4097), 400, "body"),
    "odd byte count (JSON)": (
        json_body(
            {"frames": [{"data": base64.b64encode(b"\0" * 4097).decode(), "format": "ci16"}]}
        ),
        400,
        "frames.0.data",
    ),
    "not base64": (
        json_body({"frames": [{"data": "%%%%", "format": "cf32"}]}),
        400,
        "frames.0.data",
    ),
    "non-ASCII base64": (
        json_body({"frames": [{"data": "\u00e9AAA", "format": "cf32"}]}),
        400,
        "frames.0.data",
    ),
    "NaN (binary)": (binary("format=cf32", NAN_CF32), 400, "body"),
    "NaN (JSON lists)": (
        {
            "url": "/v1/classify",
            "content": '{"frames": [{"i": ['
            + ",".join(["NaN"] * 512)
            + '], "q": ['
            + ",".join(["0"] * 512)
            + "]}]}",
            "headers": {"Content-Type": "application/json"},
        },
        400,
        "frames.0.i",
    ),
    "all-zero frame": (binary("format=ci16", b"\0" * 4096), 400, "frames.0"),
    "empty body (binary)": (binary("format=cf32", b""), 400, "body"),
    "empty body (JSON)": (
        {"url": "/v1/classify", "content": b"", "headers": {"Content-Type": "application/json"}},
        400,
        "body",
    ),
    "no frames": (json_body({"frames": []}), 422, "frames"),
    "too few samples": (binary("format=cf32", encode(noisy_tone(10), "cf32")), 400, "frames.0"),
    "too many samples in a frame": (
        binary("format=ci8", encode(noisy_tone(65537), "ci8")),
        413,
        "frames.0",
    ),
    "too many frames": (
        binary("format=ci8&frame_samples=64", encode(noisy_tone(17 * 64), "ci8")),
        413,
        "frames",
    ),
    # counted before the frames are read: 17 bad ones are one 413, not 17 errors
    "too many frames (JSON)": (json_body({"frames": [{}] * 17}), 413, "frames"),
    # a list stops at its first bad item: a million of them held the event loop for 20 s
    "bad samples in a frame": (
        json_body({"frames": [{"i": [True] * 1000, "q": [0.0] * 1000}]}),
        422,
        "frames.0.i.0",
    ),
    "frame_samples under the FFT": (
        binary("format=cf32&frame_samples=10", encode(noisy_tone(512), "cf32")),
        400,
        "frame_samples",
    ),
    "wrong content type": (
        {"url": "/v1/classify", "content": b"hello", "headers": {"Content-Type": "text/plain"}},
        415,
        "Content-Type",
    ),
    "malformed JSON": (
        {
            "url": "/v1/classify",
            "content": b'{"frames": [',
            "headers": {"Content-Type": "application/json"},
        },
        400,
        "body",
    ),
    "both encodings in a frame": (
        json_body({"frames": [{"data": GOOD_B64, "format": "cf32", "i": [0.0], "q": [0.0]}]}),
        422,
        "frames.0",
    ),
    "i and q differ in length": (
        json_body({"frames": [{"i": [0.0] * 100, "q": [0.0] * 99}]}),
        422,
        "frames.0",
    ),
    "unknown field": (
        json_body({"frames": [{"data": GOOD_B64, "format": "cf32"}], "x": 1}),
        422,
        "x",
    ),
    "top_k above the class count": (
        json_body({"frames": [{"data": GOOD_B64, "format": "cf32"}], "top_k": 6}),
        422,
        "top_k",
    ),
    "top_k zero (binary)": (
        binary("format=cf32&top_k=0", encode(noisy_tone(512), "cf32")),
        422,
        "top_k",
    ),
    "negative sample rate": (
        json_body({"frames": [{"data": GOOD_B64, "format": "cf32"}], "sample_rate": -1}),
        422,
        "sample_rate",
    ),
    "sample rate past any receiver": (
        json_body({"frames": [{"data": GOOD_B64, "format": "cf32"}], "sample_rate": 1e308}),
        422,
        "sample_rate",
    ),
    # JSON's true and "0.5" are no numbers, though lax pydantic reads them as 1 and 0.5
    "top_k a boolean": (
        json_body({"frames": [{"data": GOOD_B64, "format": "cf32"}], "top_k": True}),
        422,
        "top_k",
    ),
    "sample rate a boolean": (
        json_body({"frames": [{"data": GOOD_B64, "format": "cf32"}], "sample_rate": True}),
        422,
        "sample_rate",
    ),
    "centre frequency a string": (
        json_body({"frames": [{"data": GOOD_B64, "format": "cf32"}], "center_freq": "1e9"}),
        422,
        "center_freq",
    ),
    "booleans as samples": (
        json_body({"frames": [{"i": [True, False] * 256, "q": [0.1] * 512}]}),
        422,
        "frames.0.i.0",
    ),
    "numeric strings as samples": (
        json_body({"frames": [{"i": [0.1] * 512, "q": ["0.1"] * 512}]}),
        422,
        "frames.0.q.0",
    ),
    "centre frequency past any receiver (binary)": (
        binary("format=cf32&center_freq=-1e300", encode(noisy_tone(512), "cf32")),
        422,
        "center_freq",
    ),
    "binary parameters on a JSON body": (
        {
            "url": "/v1/classify?format=cf32",
            "json": {"frames": [{"data": GOOD_B64, "format": "cf32"}]},
        },
        400,
        "format",
    ),
    "oversized body (Content-Length)": (binary("format=cf32", b"\0" * (2**20 + 8)), 413, "body"),
    "unknown Content-Encoding": (
        {
            **binary("format=cf32", encode(noisy_tone(512), "cf32")),
            "headers": {**BINARY, "Content-Encoding": "br"},
        },
        415,
        "Content-Encoding",
    ),
    "corrupt gzip": (
        {
            **binary("format=cf32", b"\x1f\x8bnot gzip"),
            "headers": {**BINARY, "Content-Encoding": "gzip"},
        },
        400,
        "body",
    ),
    "data after the gzip data": (
        {
            **binary("format=cf32", gzip.compress(encode(noisy_tone(512), "cf32")) + b"junk"),
            "headers": {**BINARY, "Content-Encoding": "gzip"},
        },
        400,
        "body",
    ),
    "data after the deflate data": (
        {
            **binary("format=cf32", zlib.compress(encode(noisy_tone(512), "cf32")) * 2),
            "headers": {**BINARY, "Content-Encoding": "deflate"},
        },
        400,
        "body",
    ),
    "gzip members inflating past the body limit together": (
        {
            **binary("format=cf32", gzip.compress(b"\0" * 2**19) * 3),
            "headers": {**BINARY, "Content-Encoding": "gzip"},
        },
        413,
        "body",
    ),
    "more gzip members than any gzip writer makes": (
        {
            **binary("format=cf32", gzip.compress(b"") * (MAX_GZIP_MEMBERS + 1)),
            "headers": {**BINARY, "Content-Encoding": "gzip"},
        },
        413,
        "body",
    ),
}


@pytest.mark.parametrize(
    "body",
    [{"frames": [{}] * 100_000}, {"frames": [{"i": [True] * 100_000, "q": [0.0]}]}],
    ids=["frames", "samples"],
)
def test_a_body_of_many_bad_items_is_refused_at_the_first(body):
    # an error for each of a million bad items held the event loop for 20 s
    with pytest.raises(ValidationError) as refused:
        ClassifyRequest.model_validate_json(json.dumps(body))
    assert refused.value.error_count() == 1


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_bad_input_is_a_clear_4xx_and_the_server_keeps_serving(server, case):
    request, status, field = BAD_REQUESTS[case]
    with httpx.Client(base_url=server.url) as client:
        r = client.post(**request)
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert set(error) == {"code", "message", "field"}
        assert error["field"] == field
        assert error["message"] and "Traceback" not in r.text and ".py" not in r.text
        good = client.post("/v1/classify", json={"frames": [{"data": GOOD_B64, "format": "cf32"}]})
        assert good.status_code == 200


def test_oversized_chunked_body_is_refused_while_streaming(server):
    def chunks():
        for _ in range(40):
            yield b"\0" * 65536  # 2.5 MiB in all, without a Content-Length

    r = httpx.post(f"{server.url}/v1/classify?format=cf32", content=chunks(), headers=BINARY)
    assert r.status_code == 413
    assert r.json()["error"]["field"] == "body"
    assert httpx.get(f"{server.url}/healthz/ready").status_code == 200


def test_json_has_a_lower_limit_than_binary_and_the_refusal_says_to_send_binary(server, reference):
    """The same 40,000 samples: 320 KB as cf32 are classified, about 0.7 MB as JSON lists (over
    the conftest's 256 KiB for JSON, under its 1 MiB for a body) are refused before parsing."""
    iq = noisy_tone(40_000)
    r = httpx.post(
        f"{server.url}/v1/classify?format=cf32", content=encode(iq, "cf32"), headers=BINARY
    )
    assert r.status_code == 200, r.text
    check_answer(r.json(), reference([iq]))
    i, q = np.round(iq.real.astype(float), 4).tolist(), np.round(iq.imag.astype(float), 4).tolist()
    as_lists = json.dumps({"frames": [{"i": i, "q": q}]}).encode()
    assert 2**18 < len(as_lists) < 2**20
    r = httpx.post(
        f"{server.url}/v1/classify", content=as_lists, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert error["field"] == "body" and "binary" in error["message"]
    assert str(2**18) in error["message"]
    assert httpx.get(f"{server.url}/v1/model").json()["limits"]["max_json_body_bytes"] == 2**18


def test_a_declared_oversized_body_is_refused_before_it_is_sent(server):
    """Only the headers go out: a server that read the body first would wait for it and time
    out; this one answers 413 in JSON at once, without the body ever being sent."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            b"POST /v1/classify?format=cf32 HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 1000000000\r\n\r\n"
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            assert chunk, f"connection closed after {answer!r}"
            answer += chunk
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 413")
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)["error"]
    assert error["code"] == "payload_too_large" and error["field"] == "body"


MAX_HEADER_BYTES = Settings.model_fields["max_header_bytes"].default
# closing: a server without the limit answers 200 and the test reads that to the end
GET_LIVE = b"GET /healthz/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
# each several times the limit; uvicorn's httptools protocol read and held them all (1.5 GB of
# fields was answered 200)
OVERSIZED_HEADS = {
    "many fields": GET_LIVE
    + b"".join(b"X-Field-%d: %s\r\n" % (i, b"a" * 8192) for i in range(MAX_HEADER_BYTES // 2048))
    + b"\r\n",
    # never ends: httptools holds a field until the next begins, so only counting the bytes as
    # they arrive can refuse it
    "one endless field": GET_LIVE + b"X-Endless: " + b"a" * (16 * MAX_HEADER_BYTES),
    # uvicorn gathered it all, then httptools refused it as past 64 KiB (a 400)
    "an endless URL": b"GET /healthz/live?" + b"a" * (16 * MAX_HEADER_BYTES),
}


def send_and_read_to_close(server, request: bytes) -> bytes:
    """All that comes back for `request`, which the server may stop reading part way."""
    host, port = server.url.removeprefix("http://").split(":")
    answer = b""
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        with contextlib.suppress(OSError):  # the server closed the connection on the rest
            conn.sendall(request)
        # its close, with the rest unread, resets the connection
        with contextlib.suppress(ConnectionResetError):
            while chunk := conn.recv(65536):
                answer += chunk
    return answer


@pytest.mark.parametrize("request_head", OVERSIZED_HEADS.values(), ids=list(OVERSIZED_HEADS))
def test_an_oversized_head_is_431_without_waiting_for_its_end(server, request_head):
    answer = send_and_read_to_close(server, request_head)
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"connection: close" in head.lower()
    error = json.loads(body)["error"]
    assert error["code"] == "header_fields_too_large" and error["field"] == "headers"
    assert str(MAX_HEADER_BYTES) in error["message"]
    # the server goes on, and a head of half the limit is no trouble
    big = {"X-Big": "a" * (MAX_HEADER_BYTES // 2)}
    assert httpx.get(f"{server.url}/healthz/live", headers=big).status_code == 200


def test_endless_trailer_fields_close_the_connection(server):
    """A chunked body's trailer fields are held as a head's are; the request's answer is its
    handler's to give, so the connection is closed rather than answered 431."""
    samples = base64.b64decode(GOOD_B64)
    request = (
        b"POST /v1/classify?format=cf32 HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"%x\r\n%s\r\n0\r\nX-Endless: " % (len(samples), samples)
    )
    assert send_and_read_to_close(server, request + b"a" * (16 * MAX_HEADER_BYTES)) == b""
    assert httpx.get(f"{server.url}/healthz/live").status_code == 200


def test_unknown_route_is_a_json_404(server):
    r = httpx.get(f"{server.url}/v1/nothing")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "http_error"


def test_a_wrong_method_is_a_json_405_naming_the_allowed_one(server):
    r = httpx.get(f"{server.url}/v1/classify")
    assert r.status_code == 405 and r.headers["Allow"] == "POST"
    assert r.json()["error"]["code"] == "http_error"


def test_model_description(server, tiny_bundle):
    r = httpx.get(f"{server.url}/v1/model")
    assert r.status_code == 200
    model = r.json()
    assert model["classes"] == list(TINY_CLASSES)
    assert model["backend"] == "mha" and model["norm"] == "rmsnorm"
    assert model["device"] == "cpu" and model["precision"] == "float32"
    assert model["features"]["nfft"] == 64 and model["features"]["hop"] == 32
    assert model["model"]["n_classes"] == len(TINY_CLASSES)
    assert model["latency_budget_ms"] == 30.0
    assert model["limits"]["max_samples"] == 65536
    assert model["limits"]["min_samples"] == 64
    assert model["version"] == load_bundle(tiny_bundle).version


def test_probes(server):
    assert httpx.get(f"{server.url}/healthz/live").json() == {"status": "ready"}
    ready = httpx.get(f"{server.url}/healthz/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


def test_metrics_count_requests(server):
    route = {"route": "/v1/classify", "backend": "mha"}
    before = httpx.get(f"{server.url}/metrics").text
    body = {"frames": [{"data": GOOD_B64, "format": "cf32"}] * 3}
    for _ in range(2):
        assert httpx.post(f"{server.url}/v1/classify", json=body).status_code == 200
    assert httpx.post(f"{server.url}/v1/classify", json={"frames": []}).status_code == 422
    after = httpx.get(f"{server.url}/metrics").text

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("rfcls_requests_total", outcome="ok", **route) == 2
    assert delta("rfcls_requests_total", outcome="client_error", **route) == 1
    assert delta("rfcls_request_duration_seconds_count", outcome="ok", **route) == 2
    assert delta("rfcls_frames_total", backend="mha") == 6
    assert delta("rfcls_rejections_total", reason="invalid") == 1
    assert delta("rfcls_stage_duration_seconds_count", stage="queue", backend="mha") == 2
    assert delta("rfcls_batch_size_sum", backend="mha") == 6
    assert metric(after, "rfcls_latency_budget_seconds") == 0.03
    assert (
        0
        < metric(after, "rfcls_latency_p50_seconds", backend="mha")
        <= metric(after, "rfcls_latency_p99_seconds", backend="mha")
    )
    assert metric(after, "rfcls_inflight_requests") == 0
    assert metric(after, "rfcls_queue_depth") == 0
    # RFCLS_MAX_QUEUE_WAIT_MS is 30 s here, so the ceiling is too and the limit holds there
    assert metric(after, "rfcls_queue_wait_limit_seconds") == 30
    info = {
        "backend": "mha",
        "device": "cpu",
        "precision": "float32",
        "model_version": httpx.get(f"{server.url}/v1/model").json()["version"],
    }
    assert metric(after, "rfcls_model_info", **info) == 1
    assert 'le="0.03"' in after


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_metrics(server):
    httpx.post(f"{server.url}/v1/classify", json={"frames": [{"data": GOOD_B64, "format": "cf32"}]})
    text = httpx.get(f"{server.url}/metrics").text
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
