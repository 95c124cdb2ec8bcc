"""Open Inference Protocol (KServe v2, as Triton speaks it over HTTP), so `tritonclient.http`
works unchanged.

The model, named `rfcls`, takes one input and gives two outputs by default, a third on request:

    IQ             input   FP32, INT16, INT8 or UINT8   [N, S, 2] or [N, 2S]
                   N frames of S interleaved I/Q samples (as cf32, ci16, ci8, cu8: same scaling)
    PROBABILITIES  output  FP32    [N, C]   class probabilities, in GET /v1/model's class order
    LABEL          output  BYTES   [N]      the most probable class of each frame
    SIGNAL         output  FP32    [N, 3]   centre and occupied bandwidth (cycles/sample) and
                                            in-band SNR (dB) of each frame's signal, NaN where
                                            nothing stands out of the noise (v1's `signal`)

Extensions: binary_tensor_data (inputs and outputs; `binary_data_output` / per-output
`binary_data`), classification (`classification: k` on PROBABILITIES gives BYTES [N, k] of
"probability:index:label"). Request parameter `timeout` (microseconds, as in Triton) can shorten
the time a request may wait in the queue. A tensor is rectangular: frames of different lengths go
in separate requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.context import ServiceContext
from service.engine import Prediction
from service.protocol import samples
from service.protocol.disconnects import unless_disconnected
from service.protocol.errors import BadRequest, ModelNotFound
from service.protocol.limits import check_frame_count, decoded_body
from service.protocol.v2_tensors import (
    HEADER_LENGTH,
    InferenceRequest,
    OutputTensor,
    RequestOutput,
    encode_response,
    parse_request,
    tensor_bytes,
)

IQ = "IQ"
PROBABILITIES = "PROBABILITIES"
LABEL = "LABEL"
# asked for by name: [N, 3] of preprocessing.occupancy.FIELDS (v1's `signal`), NaN where none
SIGNAL = "SIGNAL"
OUTPUTS = (PROBABILITIES, LABEL, SIGNAL)
IQ_FORMATS = {"FP32": "cf32", "INT16": "ci16", "INT8": "ci8", "UINT8": "cu8"}
EXTENSIONS = ["binary_tensor_data", "classification"]


def server_version() -> str:
    try:
        return version("rfcls")
    except PackageNotFoundError:
        return "unknown"


def health(ok: bool) -> Response:
    # the protocol: 200 means true, 4xx false, and the body is empty
    return Response(status_code=200 if ok else 400)


# documents the empty bodies: 200 is true, 400 false (FastAPI would promise JSON otherwise)
HEALTH_DOC: dict[str, Any] = {"response_class": Response, "responses": {400: {"description": "no"}}}


def build_router(ctx: ServiceContext, guard: Callable | None) -> APIRouter:
    router = APIRouter()
    guarded = APIRouter(dependencies=[Depends(guard)] if guard else [])
    card, engine, settings = ctx.card, ctx.engine, ctx.settings

    def check_model(name: str, model_version: str | None) -> None:
        if name != card.name:
            raise ModelNotFound(f"no model named {name!r}; this server has {card.name!r}", "name")
        if model_version is not None and model_version != card.version:
            raise ModelNotFound(
                f"model {name!r} has no version {model_version!r}; it has {card.version!r}",
                "version",
            )

    @router.get("/v2", summary="Server metadata")
    async def server_metadata() -> dict:
        return {"name": card.name, "version": server_version(), "extensions": EXTENSIONS}

    @router.get("/v2/health/live", summary="Server live", **HEALTH_DOC)
    async def server_live() -> Response:
        return health(engine.live)

    @router.get("/v2/health/ready", summary="Server ready", **HEALTH_DOC)
    async def server_ready() -> Response:
        return health(engine.ready)

    @router.get("/v2/models/{name}/ready", summary="Model ready", **HEALTH_DOC)
    @router.get(
        "/v2/models/{name}/versions/{model_version}/ready", summary="Model ready", **HEALTH_DOC
    )
    async def model_ready(name: str, model_version: str | None = None) -> Response:
        check_model(name, model_version)
        return health(engine.ready)

    @guarded.get("/v2/models/{name}", summary="Model metadata")
    @guarded.get("/v2/models/{name}/versions/{model_version}", summary="Model metadata")
    async def model_metadata(name: str, model_version: str | None = None) -> dict:
        check_model(name, model_version)
        return {
            "name": card.name,
            "versions": [card.version],
            "platform": "pytorch",
            "inputs": [{"name": IQ, "datatype": "FP32", "shape": [-1, -1, 2]}],
            "outputs": [
                {"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, len(card.classes)]},
                {"name": LABEL, "datatype": "BYTES", "shape": [-1]},
                {"name": SIGNAL, "datatype": "FP32", "shape": [-1, 3]},
            ],
        }

    @guarded.post("/v2/models/{name}/infer", summary="Inference")
    @guarded.post("/v2/models/{name}/versions/{model_version}/infer", summary="Inference")
    async def infer(request: Request, name: str, model_version: str | None = None) -> Response:
        check_model(name, model_version)
        started = time.perf_counter()
        with engine.arriving() as arrival:
            body = await decoded_body(request, settings.max_body_bytes)
            parsed = parse_request(
                body, request.headers.get(HEADER_LENGTH), settings.max_json_body_bytes
            )
            frames = iq_frames(parsed.request, parsed.raw, settings.max_frames_per_request)
            samples.check_frames(frames, card.feature_config, settings.max_samples, "IQ")
            wanted = requested_outputs(parsed.request, len(card.classes))
            prediction = await unless_disconnected(
                request, engine.predict(frames, timeout_s(parsed.request), arrival)
            )
        header = {
            "model_name": card.name,
            "model_version": card.version,
            **({"id": parsed.request.id} if parsed.request.id is not None else {}),
            "parameters": timing_parameters(prediction, started),
        }
        outputs = [(output_tensor(o, prediction, card.classes), binary) for o, binary in wanted]
        content, header_length = encode_response(header, outputs)
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(
            content,
            media_type="application/octet-stream",
            headers={HEADER_LENGTH: str(header_length)},
        )

    router.include_router(guarded)
    return router


def iq_frames(
    request: InferenceRequest, raw: dict[str, bytes], max_frames: int
) -> list[np.ndarray]:
    names = [t.name for t in request.inputs]
    if names != [IQ]:
        raise BadRequest(f"this model takes exactly one input, {IQ!r}; got {names}", "inputs")
    tensor = request.inputs[0]
    fmt = IQ_FORMATS.get(tensor.datatype)
    if fmt is None:
        raise BadRequest(
            f"{tensor.datatype!r} is not one of {', '.join(IQ_FORMATS)}", f"{IQ}.datatype"
        )
    shape = tensor.shape
    if len(shape) == 3 and shape[2] == 2:
        n_frames, n_samples = shape[0], shape[1]
    elif len(shape) == 2 and shape[1] % 2 == 0:
        n_frames, n_samples = shape[0], shape[1] // 2
    else:
        raise BadRequest(f"{shape} is neither [N, S, 2] nor [N, 2S]", f"{IQ}.shape")
    if n_frames < 1 or n_samples < 1:
        raise BadRequest(f"{shape} holds no samples", f"{IQ}.shape")
    check_frame_count(n_frames, max_frames, "IQ.shape")
    iq = samples.decode(tensor_bytes(tensor, raw.get(IQ)), fmt, IQ)
    return list(iq.reshape(n_frames, n_samples))


def requested_outputs(
    request: InferenceRequest, n_classes: int
) -> list[tuple[RequestOutput, bool]]:
    """The outputs to send, each with whether it goes as binary data."""
    binary_default = request.parameters.get("binary_data_output", False) is True
    outputs = request.outputs or [RequestOutput(name=PROBABILITIES), RequestOutput(name=LABEL)]
    wanted = []
    for k, output in enumerate(outputs):
        if output.name not in OUTPUTS:
            raise BadRequest(
                f"unknown output {output.name!r}; outputs are {', '.join(OUTPUTS)}",
                f"outputs.{k}.name",
            )
        # each once: 10,000 copies of one asked for a 193 MB answer
        if any(output.name == earlier.name for earlier, _ in wanted):
            raise BadRequest(f"{output.name!r} is asked for twice", f"outputs.{k}.name")
        top = output.parameters.get("classification")
        if top is not None and (
            output.name != PROBABILITIES
            or not isinstance(top, int)
            or isinstance(top, bool)
            or not 1 <= top <= n_classes
        ):
            raise BadRequest(
                f"classification applies to {PROBABILITIES}, with 1 to {n_classes} classes",
                f"outputs.{k}.parameters.classification",
            )
        wanted.append((output, output.parameters.get("binary_data", binary_default) is True))
    return wanted


def output_tensor(
    output: RequestOutput, prediction: Prediction, classes: tuple[str, ...]
) -> OutputTensor:
    probabilities = prediction.probabilities
    n = probabilities.shape[0]
    if output.name == SIGNAL:
        signal = prediction.signal.astype(np.float32)
        return OutputTensor(SIGNAL, "FP32", list(signal.shape), signal)
    if output.name == LABEL:
        labels = np.array([classes[c].encode() for c in probabilities.argmax(axis=1)], dtype=object)
        return OutputTensor(LABEL, "BYTES", [n], labels)
    top = output.parameters.get("classification")
    if top is None:
        return OutputTensor(PROBABILITIES, "FP32", list(probabilities.shape), probabilities)
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top]  # [N, k]
    entries = [
        f"{row[c]:f}:{c}:{classes[c]}".encode()
        for row, ranked in zip(probabilities, order, strict=True)
        for c in ranked
    ]
    return OutputTensor(PROBABILITIES, "BYTES", [n, int(top)], np.array(entries, dtype=object))


def timeout_s(request: InferenceRequest) -> float | None:
    timeout = request.parameters.get("timeout")
    if timeout is None:
        return None
    if not isinstance(timeout, int) or isinstance(timeout, bool) or not 0 < timeout < 2**53:
        raise BadRequest("a positive number of microseconds below 2^53", "parameters.timeout")
    return timeout / 1e6


def timing_parameters(prediction: Prediction, started: float) -> dict[str, float]:
    return {
        "queue_ms": 1000 * prediction.queue_s,
        "preprocess_ms": 1000 * prediction.preprocess_s,
        "inference_ms": 1000 * prediction.inference_s,
        "total_ms": 1000 * (time.perf_counter() - started),
    }
