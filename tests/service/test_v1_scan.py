"""POST /v1/scan against a real `rfcls serve` subprocess: every signal of a frame found and each
classified, checked against preprocessing.emissions and the model run in this process on the
same cut-outs."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
import torch
from known_signals import band_noise, white
from live_servers import TINY_CLASSES, ServerProcess, metric

from preprocessing.emissions import baseband, find_emissions
from preprocessing.formats import encode
from service.scan import MIN_CUT_SAMPLES, signals_in

RNG = np.random.default_rng(77)
BINARY = {"content-type": "application/octet-stream"}


def bands(n: int, spans: list[tuple[float, float, float]], noise: float = 1e-2) -> np.ndarray:
    """White noise of this power plus a flat band of each (low, high, power)."""
    x = white(RNG, n, power=noise)[0]
    for low, high, power in spans:
        x = x + band_noise(RNG, n, low, high, power)
    return x.astype(np.complex64)


def requests(metrics_text: str, labels: dict[str, str]) -> float:
    """rfcls_requests_total for these labels; 0 before the first such request."""
    try:
        return metric(metrics_text, "rfcls_requests_total", **labels)
    except KeyError:
        return 0.0


def as_json(frames: list[np.ndarray], **fields) -> dict:
    encoded = [
        {"data": base64.b64encode(encode(f, "cf32")).decode(), "format": "cf32"} for f in frames
    ]
    return {"frames": encoded, **fields}


def test_each_signal_of_a_frame_is_found_and_classified_on_its_own(server, reference):
    n, fs, tuned = 32768, 2.4e6, 433.92e6
    # a tone and a band: cut out, they still differ (two bands would both fill FILL of theirs)
    frame = bands(n, [(0.1, 0.16, 1.0)]) + np.exp(-2j * np.pi * 0.3 * np.arange(n)).astype(
        np.complex64
    )
    r = httpx.post(
        f"{server.url}/v1/scan?format=cf32&sample_rate={fs}&center_freq={tuned}&top_k=4",
        content=encode(frame, "cf32"),
        headers=BINARY,
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    (result,) = answer["frames"]
    assert result["n_samples"] == n and len(result["signals"]) == 2
    (emissions,) = find_emissions(torch.from_numpy(frame)[None])
    cuts = baseband(frame, emissions, emissions, MIN_CUT_SAMPLES, shortest=64)
    for found, e, cut, center in zip(result["signals"], emissions, cuts, (-0.3, 0.13), strict=True):
        signal = found["signal"]
        assert signal["center_offset"] == pytest.approx(e.center, abs=1e-9)
        assert signal["center_offset"] == pytest.approx(center, abs=2 / 1024)
        assert signal["bandwidth"] == pytest.approx(e.bandwidth, abs=1e-9)
        assert signal["snr_db"] == pytest.approx(e.snr_db, abs=1e-6)
        assert signal["center_freq_hz"] == pytest.approx(tuned + e.center * fs)
        assert found["n_samples"] == cut.size
        (expected,) = reference([cut])
        ranked = [(c["label"], c["probability"]) for c in found["top_k"]]
        assert len(ranked) == 4 and found["label"] == ranked[0][0]
        assert found["label"] == TINY_CLASSES[int(np.argmax(expected))]
        for label, p in ranked:
            assert p == pytest.approx(expected[TINY_CLASSES.index(label)], abs=1e-5)
    assert answer["sample_rate"] == fs and answer["center_freq"] == tuned
    assert answer["timings_ms"]["inference"] > 0


def test_frames_of_noise_have_no_signals_and_cost_no_model_call(server):
    noise = bands(8192, [], noise=1.0)
    before = httpx.get(f"{server.url}/metrics").text
    r = httpx.post(f"{server.url}/v1/scan", json=as_json([noise, noise]))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert [f["signals"] for f in answer["frames"]] == [[], []]
    timings = answer["timings_ms"]
    assert timings["inference"] == timings["queue"] == 0 and timings["total"] > 0
    after = httpx.get(f"{server.url}/metrics").text
    assert metric(after, "rfcls_frames_total", backend="mha") == metric(
        before, "rfcls_frames_total", backend="mha"
    )
    scans = {"route": "/v1/scan", "backend": "mha", "outcome": "ok"}
    assert metric(after, "rfcls_requests_total", **scans) - requests(before, scans) == 1


def test_a_binary_capture_cut_into_frames_is_scanned_frame_by_frame(server):
    first = bands(16384, [(0.2, 0.25, 1.0)])
    second = bands(16384, [(-0.1, -0.05, 1.0), (0.3, 0.32, 1.0)])
    body = encode(np.concatenate([first, second]), "cf32")
    r = httpx.post(
        f"{server.url}/v1/scan?format=cf32&frame_samples=16384",
        content=body,
        headers=BINARY,
    )
    assert r.status_code == 200, r.text
    centers = [[s["signal"]["center_offset"] for s in f["signals"]] for f in r.json()["frames"]]
    assert [len(c) for c in centers] == [1, 2]
    assert centers[0][0] == pytest.approx(0.225, abs=0.01)
    assert centers[1] == pytest.approx([-0.075, 0.31], abs=0.01)


@pytest.mark.parametrize(
    ("request_kwargs", "field"),
    [
        (dict(content=b"\0" * 64, headers={"content-type": "application/octet-stream"}), "format"),
        (dict(json={"frames": []}), "frames"),
        (dict(json={"frames": [{"i": [0.1] * 10, "q": [0.2] * 10}], "top_k": 99}), "top_k"),
    ],
)
def test_bad_input_is_refused_as_classify_refuses_it(server, request_kwargs, field):
    scan = httpx.post(f"{server.url}/v1/scan", **request_kwargs)
    classify = httpx.post(f"{server.url}/v1/classify", **request_kwargs)
    assert 400 <= scan.status_code < 500
    assert scan.status_code == classify.status_code
    assert scan.json() == classify.json()
    assert field in scan.text


def test_only_the_strongest_signals_are_kept_in_order_of_frequency():
    frame = bands(32768, [(-0.4, -0.38, 0.1), (-0.1, -0.08, 0.3), (0.2, 0.22, 1.0)])
    (everything,) = signals_in([frame], max_signals=8, shortest=64)
    assert len(everything.emissions) == len(everything.cuts) == 3
    (kept,) = signals_in([frame], max_signals=2, shortest=64)
    assert [e.center for e in kept.emissions] == [e.center for e in everything.emissions[1:]]
    assert [c.size for c in kept.cuts] == [c.size for c in everything.cuts[1:]]


def test_a_signal_left_out_is_still_kept_out_of_the_others_cut_outs():
    """Two strong bands and a weak one 0.02 from the first: with room for two, the weak one is
    not classified, and the first's cut-out still stops short of it."""
    frame = bands(32768, [(0.095, 0.105, 1.0), (0.14, 0.15, 0.05), (-0.305, -0.295, 1.0)])
    (everything,) = signals_in([frame], max_signals=3, shortest=64)
    (kept,) = signals_in([frame], max_signals=2, shortest=64)
    assert len(everything.emissions) == 3 and len(kept.emissions) == 2
    assert kept.cuts[1].size == everything.cuts[1].size < MIN_CUT_SAMPLES  # the band at 0.1


def test_cut_outs_are_never_shorter_than_the_models_fft(server):
    """Two tones close together in a short frame: each cut-out would have to be shorter than
    one FFT frame to stay clear of the other; it stops at one FFT (64 for the test model), so
    the model takes it, where a shorter one failed the batch it shared with other requests."""
    n = 256
    t = np.arange(n)
    tones = 0.3 * (np.exp(2j * np.pi * 0.1 * t) + np.exp(2j * np.pi * 0.205 * t))
    frame = (tones + bands(n, [], noise=1.0)).astype(np.complex64)
    (found,) = signals_in([frame], max_signals=8, shortest=64)
    assert len(found.cuts) == 2 and min(c.size for c in found.cuts) == 64
    r = httpx.post(
        f"{server.url}/v1/scan?format=cf32", content=encode(frame, "cf32"), headers=BINARY
    )
    assert r.status_code == 200, r.text
    assert [s["n_samples"] for s in r.json()["frames"][0]["signals"]] == [64, 64]


def test_the_setting_limits_the_signals_a_frame_answers_with(tiny_bundle):
    frame = bands(32768, [(-0.4, -0.38, 0.1), (-0.1, -0.08, 0.3), (0.2, 0.22, 1.0)])
    settings = {"RFCLS_MODEL_DIR": str(tiny_bundle), "RFCLS_MAX_SIGNALS_PER_FRAME": "2"}
    with ServerProcess(settings) as limited:
        r = httpx.post(
            f"{limited.url}/v1/scan?format=cf32", content=encode(frame, "cf32"), headers=BINARY
        )
    assert r.status_code == 200, r.text
    centers = [s["signal"]["center_offset"] for s in r.json()["frames"][0]["signals"]]
    assert centers == pytest.approx([-0.09, 0.21], abs=0.005)
