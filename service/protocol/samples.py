"""Request payloads -> validated complex64 frames, each error naming the field it is about
(`frames.2.data`, `body`, `frame_samples`) so a client can tell what to fix."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np

from preprocessing import formats
from preprocessing.errors import InputError, InvalidFormat, TooFewSamples
from preprocessing.features import FeatureConfig, validate_samples
from service.protocol.limits import check_frame_count
from service.protocol.v1_schemas import Frame


def refield(exc: InputError, field: str) -> InputError:
    """The same error, about `field` (the name the client used) instead of the library's own."""
    return type(exc)(field, exc.message)


def decode(data: bytes, fmt: str, field: str) -> np.ndarray:
    try:
        return formats.decode(data, fmt)
    except InputError as exc:
        raise refield(exc, field) from None


def decode_base64(text: str, fmt: str, field: str) -> np.ndarray:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as exc:  # binascii.Error, or a ValueError for non-ASCII text
        raise InvalidFormat(field, f"not valid base64 ({exc})") from None
    return decode(raw, fmt, field)


def from_json_frames(frames: Sequence[Frame]) -> list[np.ndarray]:
    """The frames of a v1 JSON body as IQ; their count was checked as ClassifyRequest read them."""
    out = []
    for k, frame in enumerate(frames):
        if frame.data is not None and frame.format is not None:
            out.append(decode_base64(frame.data, frame.format, f"frames.{k}.data"))
        else:
            try:
                out.append(formats.from_iq_lists(frame.i, frame.q))
            except InputError as exc:
                raise refield(exc, f"frames.{k}.{exc.field}") from None
    return out


def split_frames(
    iq: np.ndarray, frame_samples: int | None, max_frames: int, min_samples: int
) -> list[np.ndarray]:
    """Cut one long capture into frames of `frame_samples`; the last frame holds the remainder,
    left out when it is under `min_samples` (one FFT frame: nothing to classify), as `rfcls
    classify` leaves it out, so that a stream's tail does not cost the frames before it."""
    if frame_samples is None or frame_samples >= iq.size:
        return [iq]
    if frame_samples < min_samples:
        raise TooFewSamples(
            "frame_samples", f"{frame_samples} is under the model's FFT of {min_samples} samples"
        )
    tail = iq.size % frame_samples
    usable = iq[: iq.size - tail] if tail < min_samples else iq
    check_frame_count(-(-usable.size // frame_samples), max_frames)
    return [usable[start : start + frame_samples] for start in range(0, usable.size, frame_samples)]


def check_frames(
    frames: Sequence[np.ndarray],
    feature_config: FeatureConfig,
    max_samples: int,
    field: str = "frames",
) -> None:
    """Each frame, named field.k in what it is refused for (v1's frames, v2's IQ rows)."""
    for k, iq in enumerate(frames):
        try:
            validate_samples(iq, feature_config, max_samples)
        except InputError as exc:
            raise refield(exc, f"{field}.{k}") from None
