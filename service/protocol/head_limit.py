"""uvicorn's httptools protocol with a limit on a request's head (its URL and header fields) and
on a chunked body's trailer fields, which it otherwise holds in memory whatever their size: one
`GET /healthz/live` with 1,500 header fields of 1 MiB each was answered 200 after the server had
grown by 1.3 GB. (Its h11 protocol has a limit, h11_max_incomplete_event_size, but parses in
Python.) A head over the limit is answered 431 and its connection closed without reading more;
trailers over it close the connection, the request's own answer being under way.

httptools hands over the URL in pieces as they arrive, but a header field only whole, once the
next one starts: until then it holds the field itself, so counting the fields it hands over
would not see one endless field. The reads that arrive while the parser is inside a head or a
trailer section and do not leave it are counted whole as well; the larger count is held to the
limit after each read (at most one read, 256 KiB, past it), and a head is checked once more as it
ends, before the app sees the request.

The limit is uvicorn's config.h11_max_incomplete_event_size, h11's own for the same thing, so
that it holds whichever of the two protocols runs.

A head must also arrive in time: uvicorn times a connection's idleness only after a response, so
one that never sent a byte, or sent half a head, held its socket for good (with a low `ulimit -n`
a few hundred such used up the descriptors). A new connection, and a head from its first byte,
get RFCLS_KEEP_ALIVE_S (config.timeout_keep_alive), the idleness a connection is allowed after
a response; past it a part-sent head is answered 408, and the connection closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from service.protocol.errors import HeaderFieldsTooLarge, RequestTimeout, ServiceError, error_body

log = logging.getLogger(__name__)

# uvicorn's (h11's) default, for a config that sets none
DEFAULT_MAX_HEAD_BYTES = 16 * 2**10
# a field's ": " and CRLF, which the parser drops
FIELD_SEPARATOR_BYTES = 4
HEAD, BODY, TRAILERS = "head", "body", "trailers"


class HeadTooLarge(Exception):
    """Raised from a parser callback, to stop the parser before the app sees the request."""


class HeadLimitProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_head_bytes = config.h11_max_incomplete_event_size or DEFAULT_MAX_HEAD_BYTES
        self._section = HEAD
        self._moved = False  # to another section during the read being parsed
        self._read_bytes = 0  # of the reads that stayed inside this section
        self._field_bytes = 0  # of the URL and fields the parser has handed over in it
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None

    def _enter(self, section: str) -> None:
        self._section = section
        self._moved = True
        self._read_bytes = self._field_bytes = 0

    def _over(self) -> bool:
        return max(self._read_bytes, self._field_bytes) > self.max_head_bytes

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.timeout_keep_alive, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self._section != HEAD:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # a pipelined head behind a request still being answered: that answer comes first
            self._arm_head_timer()
            return
        if not (self._read_bytes or self._field_bytes):
            # nothing sent: closed as an idle keep-alive one is, without an answer a client
            # sending its first request just then could take for that request's
            self.transport.close()
            return
        log.info("no whole request head within %g s; answered 408", self.timeout_keep_alive)
        self._answer(
            RequestTimeout(f"no whole request head within {self.timeout_keep_alive:g} s", "headers")
        )

    def data_received(self, data: bytes) -> None:
        if self._section == HEAD and self._head_timer is None:
            self._arm_head_timer()
        started_in, self._moved = self._section, False
        super().data_received(data)
        if self._refused or self.transport.is_closing():
            return
        if self._section != BODY and self._section == started_in and not self._moved:
            self._read_bytes += len(data)
        if self._over():
            self._refuse()

    # parser callbacks

    def on_url(self, url: bytes) -> None:
        self._field_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._field_bytes += len(name) + len(value) + FIELD_SEPARATOR_BYTES
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._over():
            # the whole head came in one read: refused before a task is started for it
            self._refused = True
            raise HeadTooLarge
        self._stop_head_timer()
        self._enter(BODY)
        super().on_headers_complete()

    def on_chunk_header(self) -> None:
        # the last chunk's header, of size 0, is followed by the trailers; any other by data,
        # whose on_body moves back
        self._enter(TRAILERS)

    def on_body(self, body: bytes) -> None:
        if self._section != BODY:
            self._enter(BODY)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._enter(HEAD)
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        # the parser error that on_headers_complete's refusal raised
        if self._refused:
            self._answer(self._too_large())
        else:
            super().send_400_response(msg)

    def _refuse(self) -> None:
        self._refused = True
        # a request still being answered on this connection (its trailers, or a pipelined
        # predecessor) has its own status line under way: only closing can end it
        if self._section == HEAD and (self.cycle is None or self.cycle.response_complete):
            self._answer(self._too_large())
        else:
            log.warning("trailer fields over %d bytes; connection closed", self.max_head_bytes)
            self.transport.close()

    def _too_large(self) -> HeaderFieldsTooLarge:
        log.warning("request head over %d bytes; answered 431", self.max_head_bytes)
        return HeaderFieldsTooLarge(
            f"the URL and header fields are over {self.max_head_bytes} bytes", "headers"
        )

    def _answer(self, error: ServiceError) -> None:
        """The error in the v1 shape (the path is not known yet), and the connection closed."""
        self._stop_head_timer()
        body = json.dumps(error_body("", error), separators=(",", ":")).encode()
        content = [STATUS_LINE[error.status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()
