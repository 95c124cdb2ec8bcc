"""Arbitrary bytes and headers into the service's own decoders (v2 bodies, compressed bodies,
base64 frames): each returns a well-formed result or raises one of the errors the service maps to
a 4xx (ServiceError, InputError, pydantic's ValidationError), never anything else."""

from __future__ import annotations

import gzip
import zlib

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from preprocessing.errors import InputError
from service.protocol.errors import BadRequest, ServiceError, as_service_error
from service.protocol.limits import decompress
from service.protocol.samples import decode_base64
from service.protocol.v2_tensors import parse_request, tensor_bytes

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLIENT_ERRORS = (ServiceError, InputError, ValidationError)


def result_or_client_error(call):
    """The call's result, or None when it raised an error the service answers with a 4xx."""
    try:
        return call()
    except CLIENT_ERRORS as exc:
        assert 400 <= as_service_error(exc).status < 500
        return None


v2_bodies = st.binary(max_size=256) | st.builds(
    lambda header, rest: header.encode() + rest,
    st.sampled_from(
        [
            '{"inputs": [{"name": "IQ", "shape": [1, 4, 2], "datatype": "FP32", '
            '"parameters": {"binary_data_size": 32}}]}',
            '{"inputs": [{"name": "IQ", "shape": [-1, 2], "datatype": "INT8", "data": [1, 2]}]}',
            '{"inputs": [{"name": "IQ", "shape": [99999999999, 2], "datatype": "UINT8", '
            '"data": [[1, 2], [3]]}]}',
        ]
    )
    | st.text(max_size=64),
    st.binary(max_size=64),
)


@FAST
@given(
    body=v2_bodies,
    header_length=st.none() | st.text(max_size=6) | st.integers().map(str),
    max_json_bytes=st.integers(1, 256),
)
def test_v2_bodies(body, header_length, max_json_bytes):
    parsed = result_or_client_error(lambda: parse_request(body, header_length, max_json_bytes))
    if parsed is not None:
        for tensor in parsed.request.inputs:
            raw = result_or_client_error(lambda t=tensor: tensor_bytes(t, parsed.raw.get(t.name)))
            assert raw is None or isinstance(raw, bytes)


@FAST
@example(body=gzip.compress(b"\0" * 5000), encoding="gzip")  # inflates past the limit
@example(body=zlib.compress(b"abc")[:-3], encoding="deflate")  # truncated
@example(body=gzip.compress(b"a") + gzip.compress(b"b") + b"junk", encoding="gzip")
@given(
    body=st.binary(max_size=256) | st.binary(max_size=256).map(gzip.compress),
    encoding=st.sampled_from(["gzip", "deflate", "identity", "br", ""]) | st.text(max_size=8),
)
def test_compressed_bodies(body, encoding):
    out = result_or_client_error(lambda: decompress(body, encoding, max_bytes=4096))
    assert out is None or len(out) <= 4096


@FAST
@given(
    members=st.lists(st.tuples(st.binary(max_size=64), st.integers(0, 600)), min_size=1, max_size=4)
)
def test_gzip_members_and_zero_padding_read_as_pythons_gzip_reads_them(members):
    body = b"".join(gzip.compress(data) + b"\0" * padding for data, padding in members)
    assert decompress(body, "gzip", max_bytes=4096) == gzip.decompress(body)
    with pytest.raises(BadRequest, match="bytes after the gzip data"):
        decompress(body + b"junk", "gzip", max_bytes=4096)


@FAST
@given(text=st.text(max_size=64), fmt=st.sampled_from(["cf32", "ci16", "ci8", "cu8", "x"]))
def test_base64_frames(text, fmt):
    iq = result_or_client_error(lambda: decode_base64(text, fmt, "frames.0.data"))
    assert iq is None or iq.ndim == 1
