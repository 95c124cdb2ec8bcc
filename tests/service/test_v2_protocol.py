"""The Open Inference Protocol (KServe v2) through the real tritonclient.http package, unchanged,
against a real `rfcls serve` subprocess; JSON tensors and the binary tensor data extension."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as triton
from live_servers import TINY_CLASSES
from pydantic import ValidationError
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor

from preprocessing.features import compute_features
from preprocessing.formats import decode, encode
from preprocessing.occupancy import FIELDS, occupied_band
from preprocessing.recording import recording_features
from rfmodel.bundle import load_bundle
from service.protocol.v2_tensors import InferenceRequest, serialize_bytes

RNG = np.random.default_rng(99)
MODEL = "rfcls"


@pytest.fixture(scope="module")
def client(server):
    c = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield c
    c.close()


@pytest.fixture(scope="module")
def model_probabilities(tiny_bundle):
    bundle = load_bundle(tiny_bundle)

    def run(iq: np.ndarray) -> np.ndarray:  # [N, S] complex -> [N, C]
        with torch.inference_mode():
            x = compute_features(torch.from_numpy(iq), bundle.feature_config)
            recording = recording_features(torch.from_numpy(iq), bundle.feature_config)
            return torch.softmax(bundle.model(x, recording=recording).double(), dim=-1).numpy()

    return run


def frames(n: int, s: int) -> np.ndarray:
    return (0.3 * (RNG.standard_normal((n, s)) + 1j * RNG.standard_normal((n, s)))).astype(
        np.complex64
    )


def interleaved(iq: np.ndarray) -> np.ndarray:
    """[N, S] complex64 -> [N, S, 2] float32 (I, Q)."""
    return np.stack([iq.real, iq.imag], axis=-1).astype(np.float32)


def test_health_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    server = client.get_server_metadata()
    assert server["name"] == MODEL and "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata(MODEL)
    assert meta["name"] == MODEL
    assert meta["inputs"] == [{"name": "IQ", "datatype": "FP32", "shape": [-1, -1, 2]}]
    assert {o["name"]: o["shape"] for o in meta["outputs"]} == {
        "PROBABILITIES": [-1, len(TINY_CLASSES)],
        "LABEL": [-1],
        "SIGNAL": [-1, len(FIELDS)],
    }


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer(client, model_probabilities, binary):
    iq = frames(3, 2048)
    tensor = triton.InferInput("IQ", [3, 2048, 2], "FP32")
    tensor.set_data_from_numpy(interleaved(iq), binary_data=binary)
    outputs = [
        triton.InferRequestedOutput("PROBABILITIES", binary_data=binary),
        triton.InferRequestedOutput("LABEL", binary_data=binary),
    ]
    result = client.infer(MODEL, [tensor], outputs=outputs, request_id="req-7")
    expected = model_probabilities(iq)
    probs = result.as_numpy("PROBABILITIES")
    assert probs.dtype == np.float32 and probs.shape == (3, len(TINY_CLASSES))
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("LABEL")]
    assert labels == [TINY_CLASSES[i] for i in expected.argmax(axis=1)]
    response = result.get_response()
    assert response["id"] == "req-7" and response["model_name"] == MODEL
    assert response["parameters"]["total_ms"] > 0


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_signal_output_on_request(client, binary):
    """preprocessing.occupancy's measurements of each frame; NaN (JSON too, as Triton writes it)
    where nothing stands out of the noise."""
    n = 2048  # under the JSON limit as a JSON tensor
    tone = np.exp(2j * np.pi * -0.2 * np.arange(n)) + frames(1, n)[0]
    iq = np.stack([tone, frames(1, n)[0]]).astype(np.complex64)
    tensor = triton.InferInput("IQ", [2, n, 2], "FP32")
    tensor.set_data_from_numpy(interleaved(iq), binary_data=binary)
    output = triton.InferRequestedOutput("SIGNAL", binary_data=binary)
    signal = client.infer(MODEL, [tensor], outputs=[output]).as_numpy("SIGNAL")
    assert signal.dtype == np.float32 and signal.shape == (2, 3)
    expected = occupied_band(torch.from_numpy(iq)).numpy()
    np.testing.assert_allclose(signal, expected, rtol=1e-5, equal_nan=True)
    assert signal[0, 0] == pytest.approx(-0.2, abs=1 / 64) and np.isnan(signal[1]).all()
    # not among the default outputs: asked for by name only
    assert client.infer(MODEL, [tensor]).as_numpy("SIGNAL") is None


def test_default_outputs_are_binary_and_flat_iq_shape_works(client, model_probabilities):
    iq = frames(2, 1024)
    tensor = triton.InferInput("IQ", [2, 2048], "FP32")  # [N, 2S]
    tensor.set_data_from_numpy(interleaved(iq).reshape(2, 2048), binary_data=True)
    result = client.infer(MODEL, [tensor])
    np.testing.assert_allclose(result.as_numpy("PROBABILITIES"), model_probabilities(iq), atol=1e-5)
    assert result.as_numpy("LABEL").shape == (2,)


@pytest.mark.parametrize(
    ("datatype", "fmt"), [("INT16", "ci16"), ("INT8", "ci8"), ("UINT8", "cu8")]
)
def test_integer_samples_scale_like_the_sample_formats(client, model_probabilities, datatype, fmt):
    iq = frames(2, 512)
    raw = encode(iq.ravel(), fmt)
    components = np.frombuffer(raw, dtype={"ci16": "<i2", "ci8": "i1", "cu8": "u1"}[fmt])
    tensor = triton.InferInput("IQ", [2, 512, 2], datatype)
    tensor.set_data_from_numpy(components.reshape(2, 512, 2), binary_data=False)
    result = client.infer(MODEL, [tensor])
    expected = model_probabilities(decode(raw, fmt).reshape(2, 512))
    np.testing.assert_allclose(result.as_numpy("PROBABILITIES"), expected, atol=1e-5)


def test_classification_extension(client, model_probabilities):
    iq = frames(2, 1024)
    tensor = triton.InferInput("IQ", [2, 1024, 2], "FP32")
    tensor.set_data_from_numpy(interleaved(iq))
    output = triton.InferRequestedOutput("PROBABILITIES", class_count=2)
    result = client.infer(MODEL, [tensor], outputs=[output])
    top = result.as_numpy("PROBABILITIES")
    assert top.shape == (2, 2)
    expected = model_probabilities(iq)
    for row, probs in zip(top, expected, strict=True):
        ranked = np.argsort(-probs)[:2]
        parsed = [entry.decode().split(":") for entry in row]
        assert [int(index) for _, index, _ in parsed] == list(ranked)
        assert [label for _, _, label in parsed] == [TINY_CLASSES[i] for i in ranked]
        assert [float(p) for p, _, _ in parsed] == pytest.approx(probs[ranked], abs=1e-5)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request(client, model_probabilities, algorithm):
    iq = frames(1, 1024)
    tensor = triton.InferInput("IQ", [1, 1024, 2], "FP32")
    tensor.set_data_from_numpy(interleaved(iq), binary_data=True)
    result = client.infer(MODEL, [tensor], request_compression_algorithm=algorithm)
    np.testing.assert_allclose(result.as_numpy("PROBABILITIES"), model_probabilities(iq), atol=1e-5)


def test_versioned_paths(client, tiny_bundle):
    version = load_bundle(tiny_bundle).version
    assert client.is_model_ready(MODEL, model_version=version)
    tensor = triton.InferInput("IQ", [1, 512, 2], "FP32")
    tensor.set_data_from_numpy(interleaved(frames(1, 512)))
    assert (
        client.infer(MODEL, [tensor], model_version=version).get_response()["model_version"]
        == version
    )
    with pytest.raises(InferenceServerException) as err:
        client.infer(MODEL, [tensor], model_version="not-a-version")
    assert err.value.status() == "404"


def test_unknown_model_is_404(client):
    tensor = triton.InferInput("IQ", [1, 512, 2], "FP32")
    tensor.set_data_from_numpy(interleaved(frames(1, 512)))
    with pytest.raises(InferenceServerException) as err:
        client.infer("resnet50", [tensor])
    assert err.value.status() == "404" and "resnet50" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("resnet50")
    assert err.value.status() == "404"
    assert not client.is_model_ready("resnet50")


def test_a_wrong_method_is_405_naming_the_allowed_one(server):
    r = httpx.get(f"{server.url}/v2/models/{MODEL}/infer")
    assert r.status_code == 405 and r.headers["Allow"] == "POST"
    assert r.json() == {"error": "Method Not Allowed"}


def raw_infer(server, body: dict | bytes, headers: dict | None = None) -> httpx.Response:
    if isinstance(body, dict):
        body = json.dumps(body).encode()  # allows NaN, which httpx's json= refuses
    return httpx.post(f"{server.url}/v2/models/{MODEL}/infer", content=body, headers=headers)


def iq_input(shape: list[int], data: list, datatype: str = "FP32", **extra) -> dict:
    return {"inputs": [{"name": "IQ", "shape": shape, "datatype": datatype, "data": data, **extra}]}


BAD_V2 = {
    "wrong input name": (
        {"inputs": [{"name": "X", "shape": [1, 512, 2], "datatype": "FP32", "data": [0.1] * 1024}]},
        "inputs",
    ),
    "wrong datatype": (iq_input([1, 512, 2], [1] * 1024, "INT32"), "IQ.datatype"),
    "wrong shape": (iq_input([1, 512, 3], [0.1] * 1536), "IQ.shape"),
    "data and shape disagree": (iq_input([1, 512, 2], [0.1] * 1000), "IQ.data"),
    "NaN": (iq_input([1, 512, 2], [float("nan")] * 1024), "IQ.data: 1024 values are NaN"),
    "past float32": (iq_input([1, 512, 2], [1e39] + [0.1] * 1023), "IQ.data: values beyond"),
    "too few samples": (iq_input([1, 8, 2], [0.1] * 16), "IQ.0: got 8 samples"),
    "unknown output": (
        {**iq_input([1, 512, 2], [0.1] * 1024), "outputs": [{"name": "LOGITS"}]},
        "outputs.0.name",
    ),
    "an output asked for twice": (
        {**iq_input([1, 512, 2], [0.1] * 1024), "outputs": [{"name": "LABEL"}] * 2},
        "outputs.1.name: 'LABEL' is asked for twice",
    ),
    "bad timeout": (
        {**iq_input([1, 512, 2], [0.1] * 1024), "parameters": {"timeout": -5}},
        "parameters.timeout",
    ),
    "int8 out of range": (iq_input([1, 512, 2], [300] * 1024, "INT8"), "IQ.data: values outside"),
    "int8 not whole": (
        iq_input([1, 512, 2], [1.5] + [1] * 1023, "INT8"),
        "IQ.data: values that are not whole",
    ),
    # JSON integers have no size limit; past float64 they must not overflow into a 500
    "timeout past a float": (
        {**iq_input([1, 512, 2], [0.1] * 1024), "parameters": {"timeout": 10**400}},
        "parameters.timeout",
    ),
    "sample past a float": (iq_input([1, 512, 2], [10**400] + [0.1] * 1023), "IQ.data"),
    # JSON's true and "0.5" are no numbers, though numpy reads them as 1.0 and 0.5
    "booleans as data": (iq_input([1, 512, 2], [True, 0.1] * 512), "IQ.data"),
    "numeric strings as data": (iq_input([1, 512, 2], ["0.1"] * 1024), "IQ.data"),
    "booleans in nested data": (iq_input([1, 512, 2], [[[0.1, False]] * 512]), "IQ.data"),
}


@pytest.mark.parametrize("case", BAD_V2, ids=list(BAD_V2))
def test_bad_v2_requests_are_400_with_an_error_string(server, case):
    body, field = BAD_V2[case]
    r = raw_infer(server, body)
    assert r.status_code == 400, r.text
    assert list(r.json()) == ["error"] and field in r.json()["error"]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"inputs": [1] * 100_000}, "inputs.0"),
        ({**iq_input([1, 512, 2], [0.1] * 1024), "outputs": [1] * 100_000}, "outputs.0"),
        (iq_input([True] * 100_000, []), "inputs.0.shape.0"),
        (
            {**iq_input([1, 512, 2], [0.1] * 1024), "parameters": {f"p{k}": 1 for k in range(65)}},
            "parameters",
        ),
    ],
    ids=["inputs", "outputs", "shape", "parameters"],
)
def test_a_body_of_many_bad_items_is_refused_at_the_first(body, where):
    # an error for each of a million bad items held the event loop for seconds
    with pytest.raises(ValidationError) as refused:
        InferenceRequest.model_validate_json(json.dumps(body))
    assert refused.value.error_count() == 1
    assert ".".join(map(str, refused.value.errors()[0]["loc"])) == where


def test_malformed_and_invalid_v2_bodies(server):
    r = raw_infer(server, b"{not json")
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]
    r = raw_infer(server, {"inputs": []})
    assert r.status_code == 422 and "inputs" in r.json()["error"]
    r = raw_infer(server, {"id": "no inputs"})
    assert r.status_code == 422 and r.json()["error"] == "inputs: Field required"
    for shape in ([True, 512, 2], ["1", "512", "2"]):
        r = raw_infer(server, iq_input(shape, [0.1] * 1024))
        assert r.status_code == 422 and "inputs.0.shape.0" in r.json()["error"], r.text
    r = raw_infer(server, b'{"inputs":[]}', headers={"Inference-Header-Content-Length": "999"})
    assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"]
    r = raw_infer(server, b"\x1f\x8bnot gzip", headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400 and "gzip" in r.json()["error"]
    r = raw_infer(server, b"{}", headers={"Content-Encoding": "br"})
    assert r.status_code == 415
    # the binary extension: announced sizes must add up to the bytes sent
    tensor = {"name": "IQ", "shape": [1, 512, 2], "datatype": "FP32"}
    header = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": 4096}}]}).encode()
    r = raw_infer(
        server,
        header + b"\0" * 4000,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 400 and "binary_data_size" in r.json()["error"]


def test_json_over_its_limit_is_413_in_a_plain_body_and_in_the_binary_extensions_header(server):
    too_long = iq_input([1, 40_000, 2], [0.123456789] * 80_000)  # about 1 MB of JSON
    r = raw_infer(server, too_long)
    assert r.status_code == 413 and "binary" in r.json()["error"] and "body" in r.json()["error"]
    header = json.dumps(
        {
            "id": "x" * 2**18,
            "inputs": [
                {
                    "name": "IQ",
                    "shape": [1, 512, 2],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 4096},
                }
            ],
        }
    ).encode()
    r = raw_infer(
        server,
        header + interleaved(frames(1, 512)).tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 413 and "Inference-Header-Content-Length" in r.json()["error"]


def test_bytes_serialization_matches_tritonclient():
    elements = [b"qpsk", b"", "ünïcode".encode()]
    decoded = deserialize_bytes_tensor(serialize_bytes(elements))
    assert list(decoded) == elements
