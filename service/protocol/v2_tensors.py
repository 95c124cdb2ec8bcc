"""Open Inference Protocol (KServe v2) request/response bodies, with Triton's binary tensor data
extension: a JSON header of `Inference-Header-Content-Length` bytes, then each binary tensor's raw
bytes in order (inputs and outputs that carry `parameters.binary_data_size`). BYTES elements are
a 4-byte little-endian length followed by the bytes.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt

from preprocessing import formats
from service.protocol.errors import BadRequest
from service.protocol.limits import check_json_size

HEADER_LENGTH = "Inference-Header-Content-Length"

# The input datatypes this service reads: those of the IQ sample formats.
NUMPY_DTYPES = {"FP32": np.float32, "INT16": np.int16, "INT8": np.int8, "UINT8": np.uint8}

Scalar = str | int | float | bool
# Bounds on what a request lists, checked before its items are: pydantic builds an error for
# every bad item, and a 4 MB body of a million bad ones held the event loop for seconds. Lists
# stop at their first bad item (fail_fast); a dict is counted first.
MAX_PARAMETERS = 64


def _few_parameters(value: Any) -> Any:
    if isinstance(value, dict) and len(value) > MAX_PARAMETERS:
        raise ValueError(f"{len(value)} parameters; at most {MAX_PARAMETERS}")
    return value


Parameters = Annotated[dict[str, Scalar], BeforeValidator(_few_parameters)]


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    # strict: lax pydantic reads true as 1 and "256" as 256
    shape: list[StrictInt] = Field(fail_fast=True, description="dimensions, each >= 0")
    datatype: str
    parameters: Parameters = Field(default_factory=dict)
    data: list[Any] | None = None


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: Parameters = Field(default_factory=dict)


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    parameters: Parameters = Field(default_factory=dict)
    inputs: list[RequestInput] = Field(min_length=1, fail_fast=True)
    outputs: list[RequestOutput] | None = Field(None, fail_fast=True)


@dataclass
class ParsedRequest:
    request: InferenceRequest
    raw: dict[str, bytes] = field(default_factory=dict)  # input name -> binary tensor bytes


def parse_request(body: bytes, header_length: str | None, max_json_bytes: int) -> ParsedRequest:
    """Split the body into the JSON header and the binary tensors that follow it."""
    if header_length is None:
        header, rest = body, b""
        check_json_size(len(header), max_json_bytes, "body")
    else:
        try:
            n = int(header_length)
        except ValueError:
            raise BadRequest("not an integer", HEADER_LENGTH) from None
        if not 0 < n <= len(body):
            raise BadRequest(f"{n} is outside the body's {len(body)} bytes", HEADER_LENGTH)
        check_json_size(n, max_json_bytes, HEADER_LENGTH)
        header, rest = body[:n], body[n:]
    request = InferenceRequest.model_validate_json(header)
    raw: dict[str, bytes] = {}
    offset = 0
    for tensor in request.inputs:
        size = tensor.parameters.get("binary_data_size")
        if size is None:
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadRequest("must be a non-negative integer", f"{tensor.name}.binary_data_size")
        if offset + size > len(rest):
            raise BadRequest(
                f"{size} bytes announced, {len(rest) - offset} left in the body",
                f"{tensor.name}.binary_data_size",
            )
        raw[tensor.name] = rest[offset : offset + size]
        offset += size
    if offset != len(rest):
        raise BadRequest(f"{len(rest) - offset} bytes after the last binary tensor", "body")
    return ParsedRequest(request, raw)


JSON_TYPE_NAMES = {bool: "booleans", str: "strings", type(None): "nulls", dict: "objects"}


def leaf_types(data: list[Any]) -> set[type]:
    """The types of the values in `data`, in nested lists (rows of a tensor, which v2 allows) the
    values at the bottom. One pass in C over each level, about 13 ns a value: as long as numpy
    takes to read them as float64, a quarter of what parsing their JSON took."""
    types = set(map(type, data))
    if types == {list}:
        return leaf_types(list(chain.from_iterable(data)))
    return types


def tensor_bytes(tensor: RequestInput, raw: bytes | None) -> bytes:
    """The tensor's elements as contiguous little-endian bytes of its datatype."""
    dtype = NUMPY_DTYPES.get(tensor.datatype)
    if dtype is None:
        valid = ", ".join(NUMPY_DTYPES)
        raise BadRequest(f"{tensor.datatype!r} is not one of {valid}", f"{tensor.name}.datatype")
    if any(d < 0 for d in tensor.shape):
        raise BadRequest(f"negative dimension in {tensor.shape}", f"{tensor.name}.shape")
    count = math.prod(tensor.shape)
    itemsize = np.dtype(dtype).itemsize
    if raw is not None:
        if len(raw) != count * itemsize:
            raise BadRequest(
                f"{len(raw)} bytes for shape {tensor.shape} of {tensor.datatype} "
                f"({count * itemsize} expected)",
                f"{tensor.name}.binary_data_size",
            )
        return raw
    if tensor.data is None:
        raise BadRequest("no 'data' and no binary_data_size", f"{tensor.name}.data")
    # numpy would read true as 1 and "0.5" as 0.5 (a list beside numbers is ragged: refused below)
    strays = leaf_types(tensor.data) - {int, float, list}
    if strays:
        held = ", ".join(sorted(JSON_TYPE_NAMES[t] for t in strays))
        raise BadRequest(
            f"not an array of {tensor.datatype} numbers: it holds {held}", f"{tensor.name}.data"
        )
    try:
        values = np.asarray(tensor.data, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):  # OverflowError: an integer past float64
        raise BadRequest(
            f"not an array of {tensor.datatype} numbers", f"{tensor.name}.data"
        ) from None
    if values.size != count:
        raise BadRequest(
            f"{values.size} values for shape {tensor.shape} ({count} expected)",
            f"{tensor.name}.data",
        )
    if dtype is np.float32:
        formats.check_float32(values, f"{tensor.name}.data")
    else:
        if not np.array_equal(values, np.round(values)):
            raise BadRequest(
                f"values that are not whole numbers ({tensor.datatype} holds integers)",
                f"{tensor.name}.data",
            )
        info = np.iinfo(dtype)
        if not np.all((values >= info.min) & (values <= info.max)):
            raise BadRequest(
                f"values outside {tensor.datatype} ({info.min} to {info.max})",
                f"{tensor.name}.data",
            )
    return values.astype(np.dtype(dtype).newbyteorder("<")).tobytes()


def serialize_bytes(elements: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: str
    shape: list[int]
    values: np.ndarray  # numeric array, or an object array of bytes for BYTES

    def raw(self) -> bytes:
        if self.datatype == "BYTES":
            return serialize_bytes(list(self.values.ravel()))
        return self.values.astype(np.dtype(self.values.dtype).newbyteorder("<")).tobytes()

    def json_data(self) -> list[Any]:
        if self.datatype == "BYTES":
            return [e.decode() for e in self.values.ravel()]
        return self.values.ravel().tolist()


def encode_response(
    header: dict[str, Any], outputs: Sequence[tuple[OutputTensor, bool]]
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON header's length (None: the
    body is all JSON)."""
    blobs: list[bytes] = []
    described = []
    for tensor, binary in outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": tensor.shape,
        }
        if binary:
            blob = tensor.raw()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = tensor.json_data()
        described.append(entry)
    head = json.dumps({**header, "outputs": described}, separators=(",", ":")).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)
