"""The head limit (service/protocol/head_limit.py) fed read by read, as the event loop feeds it,
for the cases a real socket cannot stage reliably: how the bytes fall into reads."""

from __future__ import annotations

import asyncio

from uvicorn.server import ServerState

from service.server import uvicorn_config
from service.settings import Settings

LIMIT = 4096


class Transport:
    def __init__(self):
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default=None):
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def feed(reads: list[bytes]) -> tuple[Transport, list[str]]:
    """What the protocol wrote and the paths of the requests it handed to the app."""
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def run() -> Transport:
        config = uvicorn_config(Settings(max_header_bytes=LIMIT), app)
        config.load()
        protocol = config.http_protocol_class(
            config=config, server_state=ServerState(), app_state={}
        )
        transport = Transport()
        protocol.connection_made(transport)
        for data in reads:
            protocol.data_received(data)
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        return transport

    return asyncio.run(run()), seen


def head(field_bytes: int, path: str = "/x") -> bytes:
    return b"GET %s HTTP/1.1\r\nX: %s\r\n\r\n" % (path.encode(), b"a" * field_bytes)


def test_a_head_over_the_limit_in_one_read_never_reaches_the_app():
    transport, seen = feed([head(2 * LIMIT)])
    assert transport.written.startswith(b"HTTP/1.1 431 ") and transport.closed
    assert seen == []


def test_heads_under_the_limit_are_served_however_they_are_read():
    one = head(LIMIT - 100)
    # byte by byte, then two whole requests and the first bytes of a third in one read
    reads = [one[i : i + 1] for i in range(len(one))] + [one + one + one[:50], one[50:]]
    transport, seen = feed(reads)
    assert not transport.closed and b"431" not in transport.written
    assert seen == ["/x"] * 4
