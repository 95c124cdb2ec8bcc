"""Request body limits, enforced before a body is held in memory: a declared Content-Length over
the limit is refused before the first byte is read, and a body without one (chunked) is counted
as it streams in. Compressed bodies are limited again after decompression. A body must also
arrive within a time, since one held back holds its memory. (The request's head is limited in
the HTTP protocol, head_limit.py, before the app sees it.)"""

from __future__ import annotations

import asyncio
import zlib

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.protocol.errors import (
    BadRequest,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)

WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
# RFC 9110 8.4.1.3: a recipient SHOULD consider x-gzip equivalent to gzip
ALIASES = {"x-gzip": "gzip"}
GZIP_MAGIC = b"\x1f\x8b"
# zlib copies whatever was fed past a stream's end into `unused_data`: fed a body's whole rest, a
# body of many gzip members would be copied once per member (28 s for 4 MiB of empty ones)
FEED_BYTES = 2**14
# Each member costs the event loop about 2 us, so 16 MiB of empty (20-byte) ones stalled it for
# 1.6 s. bgzip, the most member-happy gzip writer, writes one per 64 KiB: 256 for 16 MiB.
MAX_GZIP_MEMBERS = 4096


class BodyLimitMiddleware:
    """Raises PayloadTooLarge, or RequestTimeout once `timeout_s` have passed since the request's
    headers and its body is still arriving, from `receive`, i.e. inside the handler that reads
    the body, so the error takes the same path (errors.py) as every other refusal. (FastAPI's own
    max_body_size answers a too-large Content-Length in plain text, not in the protocol's JSON
    error; uvicorn has no timeout for a body at all.)"""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        received = 0
        # one deadline for the whole body, not one per read: a client that sends a byte at a time
        # would renew a per-read timeout forever
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        body_done = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if declared is not None and declared > self.max_bytes:
                raise self._too_large(f"Content-Length is {declared} bytes")
            if body_done:
                # only the disconnect is left to come, which a handler may wait on for as long
                # as its request is queued (disconnects.py)
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(
                    f"{received} bytes of the body arrived in {self.timeout_s:g} s; "
                    "the rest did not",
                    "body",
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large(f"more than {received} bytes sent")
                body_done = not message.get("more_body", False)
            return message

        await self.app(scope, limited_receive, send)

    def _too_large(self, what: str) -> PayloadTooLarge:
        return PayloadTooLarge(f"{what}; the limit is {self.max_bytes}", "body")


def _content_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed one before we see it
    return None


def check_frame_count(n_frames: int, max_frames: int, field: str = "frames") -> None:
    """Also called inside pydantic's validation, which would take a ValueError for a 422: the
    service's own error passes through it as the 413 it is."""
    if n_frames > max_frames:
        raise PayloadTooLarge(f"{n_frames} frames in one request; the limit is {max_frames}", field)


def check_json_size(n_bytes: int, max_bytes: int, field: str) -> None:
    """Parsing JSON holds the GIL, so the event loop and every request waiting on it stall for as
    long as it takes: this limit, lower than the body's, bounds that stall."""
    if n_bytes > max_bytes:
        raise PayloadTooLarge(
            f"{n_bytes} bytes of JSON; the limit for JSON is {max_bytes} (send larger recordings "
            "as binary samples: application/octet-stream, or v2's binary tensor extension)",
            field,
        )


async def decoded_body(request: Request, max_bytes: int) -> bytes:
    """The request's body with its Content-Encoding undone."""
    return decompress(await request.body(), request.headers.get("content-encoding"), max_bytes)


def decompress(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """Undo Content-Encoding (gzip, deflate), never inflating beyond `max_bytes`. A gzip body
    may be several members, whose data follow one another (RFC 1952), and zero bytes may pad
    them (as gzip(1) and Python's gzip read them: tape and block writers pad); nothing else may
    follow the end of the data."""
    encoding = (encoding or "identity").strip().lower()
    encoding = ALIASES.get(encoding, encoding)
    if encoding == "identity":
        return body
    wbits = WBITS.get(encoding)
    if wbits is None:
        raise UnsupportedMediaType(f"{encoding!r}; use gzip, deflate or none", "Content-Encoding")
    data = memoryview(body)
    members: list[bytes] = []
    left = max_bytes
    end = 0
    while True:
        out, length = _inflate(data[end:], wbits, left + 1, encoding)
        if len(out) > left:
            raise PayloadTooLarge(f"more than {max_bytes} bytes once decompressed", "body")
        members.append(out)
        left -= len(out)
        end += length
        if encoding == "gzip":
            end = _past_zeros(data, end)
        if end == len(data):
            return b"".join(members)
        if encoding != "gzip" or data[end : end + 2] != GZIP_MAGIC:
            raise BadRequest(f"{len(data) - end} bytes after the {encoding} data's end", "body")
        if len(members) == MAX_GZIP_MEMBERS:
            raise PayloadTooLarge(f"more than {MAX_GZIP_MEMBERS} gzip members", "body")


def _past_zeros(data: memoryview, start: int) -> int:
    """The index of the first non-zero byte from `start` on (len(data) if none). A piece at a
    time: copying the body's whole rest after every member would be quadratic (FEED_BYTES)."""
    while start < len(data) and not data[start]:
        piece = data[start : start + FEED_BYTES].tobytes()
        start += len(piece) - len(piece.lstrip(b"\0"))
    return start


def _inflate(data: memoryview, wbits: int, limit: int, encoding: str) -> tuple[bytes, int]:
    """The stream (gzip member) at the start of `data`, inflated up to `limit` bytes (it stops
    there), and its length in `data`."""
    inflater = zlib.decompressobj(wbits)
    parts = []
    size = fed = 0
    while not inflater.eof and size < limit:
        if fed == len(data):
            raise BadRequest(f"truncated {encoding} data", "body")
        chunk = data[fed : fed + FEED_BYTES]
        try:
            parts.append(inflater.decompress(chunk, limit - size))
        except zlib.error as exc:
            raise BadRequest(f"not valid {encoding} data ({exc})", "body") from None
        size += len(parts[-1])
        fed += len(chunk)
    return b"".join(parts), fed - len(inflater.unused_data)
