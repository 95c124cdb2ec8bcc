"""v1 routes: POST /v1/classify (JSON or raw binary body) and GET /v1/model.

Thin handlers: parse and validate here, classify through the engine, shape the answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from service.context import ServiceContext
from service.engine import Prediction
from service.protocol import samples
from service.protocol.disconnects import unless_disconnected
from service.protocol.errors import BadRequest, InvalidFields, UnsupportedMediaType
from service.protocol.limits import check_json_size, decoded_body
from service.protocol.v1_schemas import (
    ClassifyRequest,
    ClassifyResponse,
    ClassProbability,
    FrameResult,
    ModelDescription,
    SampleFormat,
    Signal,
    Timings,
)

JSON = "application/json"
BINARY = "application/octet-stream"
BINARY_ONLY_PARAMS = ("format", "sample_rate", "center_freq", "top_k", "frame_samples")

CLASSIFY_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            # refs stay inside the schema ($defs), which OpenAPI 3.1 allows
            JSON: {"schema": ClassifyRequest.model_json_schema()},
            BINARY: {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def build_router(ctx: ServiceContext, guard: Callable | None) -> APIRouter:
    router = APIRouter(dependencies=[Depends(guard)] if guard else [])
    settings, card = ctx.settings, ctx.card

    @router.post(
        "/v1/classify",
        response_model=ClassifyResponse,
        openapi_extra=CLASSIFY_BODY_DOC,
        summary="Classify IQ frames (JSON body, or raw samples with query parameters)",
    )
    async def classify(
        request: Request,
        format: Annotated[SampleFormat | None, Query(description="binary: sample format")] = None,
        sample_rate: Annotated[float | None, Query(gt=0, allow_inf_nan=False)] = None,
        center_freq: Annotated[float | None, Query(allow_inf_nan=False)] = None,
        top_k: Annotated[int, Query(ge=1)] = 3,
        frame_samples: Annotated[
            int | None, Query(ge=1, description="binary: frame length")
        ] = None,
    ) -> Response:
        started = time.perf_counter()
        with ctx.engine.arriving() as arrival:
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            body = await decoded_body(request, settings.max_body_bytes)
            if content_type == BINARY:
                if format is None:
                    raise InvalidFields("required for a binary body, e.g. ?format=cf32", "format")
                frames = binary_frames(
                    body,
                    format,
                    frame_samples,
                    settings.max_frames_per_request,
                    card.feature_config.nfft,
                )
            elif content_type == JSON:
                given = [p for p in BINARY_ONLY_PARAMS if p in request.query_params]
                if given:
                    raise BadRequest("for binary bodies; in JSON it goes in the body", given[0])
                check_json_size(len(body), settings.max_json_body_bytes, "body")
                parsed = ClassifyRequest.model_validate_json(body)
                frames = samples.from_json_frames(parsed.frames, settings.max_frames_per_request)
                sample_rate, center_freq = parsed.sample_rate, parsed.center_freq
                top_k = parsed.top_k
            else:
                raise UnsupportedMediaType(
                    f"{content_type or 'none'}; send {JSON} or {BINARY}", "Content-Type"
                )
            if top_k > len(card.classes):
                raise InvalidFields(f"at most {len(card.classes)} (the number of classes)", "top_k")
            samples.check_frames(frames, card.feature_config, settings.max_samples)
            prediction = await unless_disconnected(
                request, ctx.engine.predict(frames, arrival=arrival)
            )
        answer = ClassifyResponse(
            frames=frame_results(prediction, card.classes, top_k, frames, sample_rate, center_freq),
            backend=card.backend,
            model_version=card.version,
            sample_rate=sample_rate,
            center_freq=center_freq,
            timings_ms=timings(prediction, started),
        )
        return Response(answer.model_dump_json(), media_type=JSON)

    @router.get("/v1/model", response_model=ModelDescription, summary="The served model")
    async def model() -> ModelDescription:
        return ModelDescription(
            name=card.name,
            version=card.version,
            backend=card.backend,
            norm=card.norm,
            device=card.device,
            precision=card.precision,
            classes=list(card.classes),
            model=card.model_config,
            features=card.feature_config.to_dict(),
            latency_budget_ms=settings.latency_budget_ms,
            limits={
                "min_samples": card.feature_config.nfft,
                "max_samples": settings.max_samples,
                "max_frames_per_request": settings.max_frames_per_request,
                "max_body_bytes": settings.max_body_bytes,
                "max_json_body_bytes": settings.max_json_body_bytes,
                "max_batch": settings.max_batch,
            },
            evaluation=card.evaluation,
        )

    return router


def binary_frames(
    body: bytes, fmt: str, frame_samples: int | None, max_frames: int, min_samples: int
) -> list[np.ndarray]:
    if not body:
        raise BadRequest("empty body; send raw IQ samples", "body")
    iq = samples.decode(body, fmt, "body")
    return samples.split_frames(iq, frame_samples, max_frames, min_samples)


def frame_results(
    prediction: Prediction,
    classes: tuple[str, ...],
    top_k: int,
    frames: list[np.ndarray],
    sample_rate: float | None,
    center_freq: float | None,
) -> list[FrameResult]:
    probabilities = prediction.probabilities
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]  # [N, k]
    results = []
    for row, ranked, measured, iq in zip(
        probabilities, order, prediction.signal, frames, strict=True
    ):
        best = [ClassProbability(label=classes[c], probability=float(row[c])) for c in ranked]
        results.append(
            FrameResult(
                label=best[0].label,
                probability=best[0].probability,
                top_k=best,
                n_samples=iq.size,
                signal=signal(measured, sample_rate, center_freq),
            )
        )
    return results


def signal(
    measured: np.ndarray, sample_rate: float | None, center_freq: float | None
) -> Signal | None:
    """[center, bandwidth, snr_db] (preprocessing.occupancy.FIELDS) -> Signal, or None where
    nothing was found."""
    center, bandwidth, snr_db = (float(v) for v in measured)
    if np.isnan(center):
        return None
    in_hz = sample_rate is not None
    offset_hz = center * sample_rate if in_hz else None
    return Signal(
        center_offset=center,
        bandwidth=bandwidth,
        snr_db=snr_db,
        center_offset_hz=offset_hz,
        bandwidth_hz=bandwidth * sample_rate if in_hz else None,
        center_freq_hz=center_freq + offset_hz if in_hz and center_freq is not None else None,
    )


def timings(prediction: Prediction, started: float) -> Timings:
    return Timings(
        queue=1000 * prediction.queue_s,
        preprocess=1000 * prediction.preprocess_s,
        inference=1000 * prediction.inference_s,
        total=1000 * (time.perf_counter() - started),
    )
