"""Request body limits, enforced before a body is held in memory: a declared Content-Length over
the limit is refused before the first byte is read, and a body without one (chunked) is counted
as it streams in. Compressed bodies are limited again after decompression."""

from __future__ import annotations

import zlib

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.protocol.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class BodyLimitMiddleware:
    """Raises PayloadTooLarge from `receive`, i.e. inside the handler that reads the body, so the
    error takes the same path (errors.py) as every other refusal. (FastAPI's own max_body_size
    answers a too-large Content-Length in plain text, not in the protocol's JSON error.)"""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared is not None and declared > self.max_bytes:
                raise self._too_large(f"Content-Length is {declared} bytes")
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large(f"more than {received} bytes sent")
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
    """Undo Content-Encoding (gzip, deflate), never inflating beyond `max_bytes`."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    wbits = WBITS.get(encoding)
    if wbits is None:
        raise UnsupportedMediaType(f"{encoding!r}; use gzip, deflate or none", "Content-Encoding")
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise BadRequest(f"not valid {encoding} data ({exc})", "body") from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"more than {max_bytes} bytes once decompressed", "body")
    if not inflater.eof:
        raise BadRequest(f"truncated {encoding} data", "body")
    return out
