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


def feed(
    reads: list[bytes], keep_alive_s: float = 75.0, then_s: float = 0.0
) -> tuple[Transport, list[str]]:
    """What the protocol wrote and the paths of the requests it handed to the app, `then_s`
    after the last read."""
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def run() -> Transport:
        settings = Settings(max_header_bytes=LIMIT, keep_alive_s=keep_alive_s)
        config = uvicorn_config(settings, app)
        config.load()
        protocol = config.http_protocol_class(
            config=config, server_state=ServerState(), app_state={}
        )
        transport = Transport()
        protocol.connection_made(transport)
        for data in reads:
            protocol.data_received(data)
            await asyncio.sleep(0)
        await asyncio.sleep(then_s)
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


def test_a_connection_that_sends_nothing_is_closed_at_the_keep_alive():
    # uvicorn's own keep-alive timer starts only after a response
    transport, seen = feed([], keep_alive_s=0.1, then_s=0.3)
    assert transport.closed and transport.written == b"" and seen == []


def test_a_head_that_stops_arriving_is_408_and_closed():
    # the second request on the connection: its first bytes stop uvicorn's keep-alive timer
    reads = [head(100), b"GET /y HTTP/1.1\r\nX: a"]
    transport, seen = feed(reads, keep_alive_s=0.1, then_s=0.3)
    assert seen == ["/x"] and transport.closed
    answers = transport.written.split(b"HTTP/1.1 ")
    assert answers[1].startswith(b"204 ") and answers[2].startswith(b"408 ")
    assert b'"field":"headers"' in answers[2]


def test_a_head_that_arrives_in_time_is_served_and_left_to_the_keep_alive():
    one = head(100)
    transport, seen = feed([one[:20], one[20:]], keep_alive_s=0.1, then_s=0.3)
    assert seen == ["/x"] and b"408" not in transport.written
