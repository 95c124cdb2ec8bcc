"""v1 routes: POST /v1/classify and POST /v1/scan (JSON or raw binary body), GET /v1/model.

Thin handlers: parse and validate here, classify through the engine, shape the answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
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
    FoundSignal,
    FrameQuery,
    FrameResult,
    ModelDescription,
    ScanFrame,
    ScanResponse,
    Signal,
    Timings,
)
from service.scan import FrameSignals, signals_in

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


@dataclass(frozen=True)
class Tuning:
    """How the frames were recorded, and how many classes to list for each answer."""

    sample_rate: float | None
    center_freq: float | None
    top_k: int


def build_router(ctx: ServiceContext, guard: Callable | None) -> APIRouter:
    router = APIRouter(dependencies=[Depends(guard)] if guard else [])
    settings, card = ctx.settings, ctx.card

    async def read_frames(request: Request, query: FrameQuery) -> tuple[list[np.ndarray], Tuning]:
        """The request's frames, validated, and how to read and answer them (the JSON body's
        fields, or a binary body's query parameters)."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await decoded_body(request, settings.max_body_bytes)
        tuning = Tuning(query.sample_rate, query.center_freq, query.top_k)
        if content_type == BINARY:
            if query.format is None:
                raise InvalidFields("required for a binary body, e.g. ?format=cf32", "format")
            frames = binary_frames(
                body,
                query.format,
                query.frame_samples,
                settings.max_frames_per_request,
                card.feature_config.nfft,
            )
        elif content_type == JSON:
            given = [p for p in BINARY_ONLY_PARAMS if p in request.query_params]
            if given:
                raise BadRequest("for binary bodies; in JSON it goes in the body", given[0])
            check_json_size(len(body), settings.max_json_body_bytes, "body")
            limit = {"max_frames": settings.max_frames_per_request}
            parsed = ClassifyRequest.model_validate_json(body, context=limit)
            frames = samples.from_json_frames(parsed.frames)
            tuning = Tuning(parsed.sample_rate, parsed.center_freq, parsed.top_k)
        else:
            raise UnsupportedMediaType(
                f"{content_type or 'none'}; send {JSON} or {BINARY}", "Content-Type"
            )
        if tuning.top_k > len(card.classes):
            raise InvalidFields(f"at most {len(card.classes)} (the number of classes)", "top_k")
        samples.check_frames(frames, card.feature_config, settings.max_samples)
        return frames, tuning

    def answer(
        response: type[ClassifyResponse | ScanResponse],
        results: list,
        tuning: Tuning,
        prediction: Prediction | None,
        started: float,
    ) -> Response:
        body = response(
            frames=results,
            backend=card.backend,
            model_version=card.version,
            sample_rate=tuning.sample_rate,
            center_freq=tuning.center_freq,
            timings_ms=timings(prediction, started),
        )
        return Response(body.model_dump_json(), media_type=JSON)

    @router.post(
        "/v1/classify",
        response_model=ClassifyResponse,
        openapi_extra=CLASSIFY_BODY_DOC,
        summary="Classify IQ frames (JSON body, or raw samples with query parameters)",
    )
    async def classify(request: Request, query: Annotated[FrameQuery, Query()]) -> Response:
        started = time.perf_counter()
        with ctx.engine.arriving() as arrival:
            frames, tuning = await read_frames(request, query)
            prediction = await unless_disconnected(
                request, ctx.engine.predict(frames, arrival=arrival)
            )
        results = frame_results(prediction, card.classes, frames, tuning)
        return answer(ClassifyResponse, results, tuning, prediction, started)

    @router.post(
        "/v1/scan",
        response_model=ScanResponse,
        openapi_extra=CLASSIFY_BODY_DOC,
        summary="Find every signal in IQ frames and classify each (same body as /v1/classify)",
    )
    async def scan(request: Request, query: Annotated[FrameQuery, Query()]) -> Response:
        started = time.perf_counter()
        with ctx.engine.arriving() as arrival:
            frames, tuning = await read_frames(request, query)
            # spectra and FFTs of whole frames: off the event loop, as the engine's work is
            found = await asyncio.to_thread(
                signals_in, frames, settings.max_signals_per_frame, card.feature_config.nfft
            )
            cuts = [cut for frame in found for cut in frame.cuts]
            prediction = None
            if cuts:
                prediction = await unless_disconnected(
                    request, ctx.engine.predict(cuts, arrival=arrival)
                )
        results = scan_results(prediction, card.classes, frames, found, tuning)
        return answer(ScanResponse, results, tuning, prediction, started)

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


def ranked(probabilities: np.ndarray, classes: tuple[str, ...], top_k: int):
    """[N, C] probabilities -> for each row its top_k classes, most probable first."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]  # [N, k]
    return [
        [ClassProbability(label=classes[c], probability=float(row[c])) for c in best]
        for row, best in zip(probabilities, order, strict=True)
    ]


def frame_results(
    prediction: Prediction, classes: tuple[str, ...], frames: list[np.ndarray], tuning: Tuning
) -> list[FrameResult]:
    return [
        FrameResult(
            label=best[0].label,
            probability=best[0].probability,
            top_k=best,
            n_samples=iq.size,
            signal=signal(measured, tuning),
        )
        for best, measured, iq in zip(
            ranked(prediction.probabilities, classes, tuning.top_k),
            prediction.signal,
            frames,
            strict=True,
        )
    ]


def scan_results(
    prediction: Prediction | None,
    classes: tuple[str, ...],
    frames: list[np.ndarray],
    found: list[FrameSignals],
    tuning: Tuning,
) -> list[ScanFrame]:
    """The engine answered the frames' cut-outs in order: frame by frame, signal by signal."""
    answers = [] if prediction is None else ranked(prediction.probabilities, classes, tuning.top_k)
    results, start = [], 0
    for iq, signals in zip(frames, found, strict=True):
        mine = answers[start : start + len(signals.cuts)]
        start += len(signals.cuts)
        results.append(
            ScanFrame(
                n_samples=iq.size,
                signals=[
                    FoundSignal(
                        signal=signal(np.array([e.center, e.bandwidth, e.snr_db]), tuning),
                        label=best[0].label,
                        probability=best[0].probability,
                        top_k=best,
                        n_samples=cut.size,
                    )
                    for e, cut, best in zip(signals.emissions, signals.cuts, mine, strict=True)
                ],
            )
        )
    return results


def signal(measured: np.ndarray, tuning: Tuning) -> Signal | None:
    """[center, bandwidth, snr_db] (preprocessing.occupancy.FIELDS) -> Signal, or None where
    nothing was found."""
    center, bandwidth, snr_db = (float(v) for v in measured)
    sample_rate, center_freq = tuning.sample_rate, tuning.center_freq
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


def timings(prediction: Prediction | None, started: float) -> Timings:
    return Timings(
        queue=1000 * prediction.queue_s if prediction else 0.0,
        preprocess=1000 * prediction.preprocess_s if prediction else 0.0,
        inference=1000 * prediction.inference_s if prediction else 0.0,
        total=1000 * (time.perf_counter() - started),
    )
