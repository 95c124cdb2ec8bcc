"""Request and response bodies of the v1 API (POST /v1/classify, POST /v1/scan, GET /v1/model)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from service.protocol.limits import check_frame_count

# The wire formats of preprocessing.formats.FORMATS (a test keeps the two equal).
SampleFormat = Literal["cf32", "ci16", "ci8", "cu8"]


# JSON bodies are strict: lax pydantic reads true as 1 and "0.5" as 0.5 (a JSON integer still
# reads as a float). Query parameters (FrameQuery) arrive as text, so stay lax.
STRICT_JSON = ConfigDict(extra="forbid", strict=True)

# Lists below stop at their first bad item (fail_fast): pydantic otherwise builds an error for
# every one, and a 3 MB body of a million `{}` frames held the event loop for 20 s before its 422.


class Frame(BaseModel):
    """One frame of IQ samples: raw bytes in a sample format, base64-encoded, or I and Q lists."""

    model_config = STRICT_JSON

    data: str | None = Field(None, description="base64 of the raw samples, laid out as `format`")
    format: SampleFormat | None = Field(None, description="sample format of `data`")
    i: list[float] | None = Field(None, fail_fast=True, description="in-phase values")
    q: list[float] | None = Field(
        None, fail_fast=True, description="quadrature values, as many as `i`"
    )

    @model_validator(mode="after")
    def _one_encoding(self) -> Frame:
        encoded = self.data is not None or self.format is not None
        listed = self.i is not None or self.q is not None
        if encoded == listed:
            raise ValueError("give either 'data' with 'format', or 'i' with 'q'")
        if encoded and (self.data is None or self.format is None):
            raise ValueError("'data' and 'format' go together")
        if listed:
            if self.i is None or self.q is None:
                raise ValueError("'i' and 'q' go together")
            if len(self.i) != len(self.q):
                raise ValueError(f"'i' has {len(self.i)} values but 'q' has {len(self.q)}")
        return self


# Far past any receiver (the radio spectrum ends at 3 THz), and small enough that a signal's
# offset and frequency in Hz stay finite: a rate of 1e308 turned them into infinities, null in JSON
MAX_SAMPLE_RATE = 1e13
MAX_FREQUENCY = 1e15
SampleRate = Annotated[float, Field(gt=0, le=MAX_SAMPLE_RATE, allow_inf_nan=False)]
Frequency = Annotated[float, Field(ge=-MAX_FREQUENCY, le=MAX_FREQUENCY, allow_inf_nan=False)]


class FrameQuery(BaseModel):
    """Query parameters of a binary body (a JSON body carries them as fields instead)."""

    format: SampleFormat | None = Field(None, description="binary: sample format")
    sample_rate: SampleRate | None = None
    center_freq: Frequency | None = None
    top_k: int = Field(3, ge=1)
    frame_samples: int | None = Field(None, ge=1, description="binary: frame length")


class ClassifyRequest(BaseModel):
    model_config = STRICT_JSON

    frames: list[Frame] = Field(
        min_length=1, fail_fast=True, description="frames to classify, each on its own"
    )
    sample_rate: SampleRate | None = Field(None, description="Hz")
    center_freq: Frequency | None = Field(None, description="Hz")
    top_k: int = Field(3, ge=1, description="how many classes to list per frame")

    @field_validator("frames", mode="before")
    @classmethod
    def _frame_count(cls, frames: Any, info: ValidationInfo) -> Any:
        # before the frames are read one by one: a limit of 64 need not read 200,000 first
        if isinstance(frames, list) and info.context is not None:
            check_frame_count(len(frames), info.context["max_frames"])
        return frames


class ClassProbability(BaseModel):
    label: str
    probability: float


class Signal(BaseModel):
    """A signal's occupied band, measured from its frame's spectrum (preprocessing.occupancy;
    for a scan, preprocessing.emissions): the span holding 99 % of its power above the noise
    floor, and the in-band SNR."""

    center_offset: float = Field(description="centre, cycles/sample from the tuned frequency")
    bandwidth: float = Field(description="occupied bandwidth, cycles/sample")
    snr_db: float = Field(description="power over the noise within the bandwidth, dB")
    center_offset_hz: float | None = Field(description="with sample_rate: the offset in Hz")
    bandwidth_hz: float | None = Field(description="with sample_rate: the bandwidth in Hz")
    center_freq_hz: float | None = Field(
        description="with sample_rate and center_freq: the signal's own centre frequency"
    )


class FrameResult(BaseModel):
    label: str
    probability: float
    top_k: list[ClassProbability]
    n_samples: int
    signal: Signal | None = Field(
        description="null where nothing stands out of the noise (or under 256 samples)"
    )


class Timings(BaseModel):
    """Milliseconds. queue: arrival at the engine to the start of the request's first batch;
    preprocess and inference: the batches that held the request's frames; total: arrival at the
    handler to the answer being ready."""

    queue: float
    preprocess: float
    inference: float
    total: float


class ClassifyResponse(BaseModel):
    frames: list[FrameResult]
    backend: str
    model_version: str
    sample_rate: float | None
    center_freq: float | None
    timings_ms: Timings


class FoundSignal(BaseModel):
    """One of the signals a scan found in a frame: where it is, and what the model says it is."""

    signal: Signal
    label: str
    probability: float
    top_k: list[ClassProbability]
    n_samples: int = Field(description="samples of the signal cut out to baseband and classified")


class ScanFrame(BaseModel):
    n_samples: int
    signals: list[FoundSignal] = Field(
        description="in order of frequency; empty where nothing stands out of the noise"
    )


class ScanResponse(BaseModel):
    frames: list[ScanFrame]
    backend: str
    model_version: str
    sample_rate: float | None
    center_freq: float | None
    timings_ms: Timings = Field(description="queue, preprocess and inference 0 with no signals")


class ModelDescription(BaseModel):
    name: str
    version: str
    backend: str
    norm: str
    device: str
    precision: str = Field(description="the model's dtype (RFCLS_PRECISION): float32 or bfloat16")
    classes: list[str]
    model: dict[str, Any] = Field(description="the model's configuration")
    features: dict[str, Any] = Field(description="the preprocessing the model was trained with")
    latency_budget_ms: float
    limits: dict[str, int]
    evaluation: dict[str, Any] | None = Field(description="held-out metrics, once evaluated")
