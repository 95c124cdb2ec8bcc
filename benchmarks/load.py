"""A lean HTTP/1.1 load generator for the overload and soak scripts.

Requests are encoded to bytes once and written on keep-alive connections with asyncio streams;
answers are parsed only as far as status, Retry-After and body. On a 2-core box the load
generator shares the CPU with the server, and a full client (httpx) spends about ten times more
CPU per request, enough to cap the offered load below what these tests must offer.
"""

from __future__ import annotations

import asyncio
import gc
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

CONNECT_TIMEOUT_S = 10


@dataclass(frozen=True)
class Request:
    name: str  # what kind of request this is, for the tallies
    method: str
    target: str  # path and query
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self, host: str) -> bytes:
        head = [f"{self.method} {self.target} HTTP/1.1", f"Host: {host}"]
        head += [f"{k}: {v}" for k, v in self.headers.items()]
        head.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + self.body


@dataclass(frozen=True)
class Answer:
    name: str
    status: int  # 0: no answer (connection failed, closed or timed out)
    latency_s: float  # from writing the request to the end of the answer
    sent_late_s: float  # how long after its scheduled time the request went out (open loop)
    retry_after: str | None
    body: bytes
    error: str | None = None
    sent_at: float = 0.0  # time.perf_counter() when the request went out


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), CONNECT_TIMEOUT_S
        )
        return cls(reader, writer)

    async def exchange(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        self.writer.write(raw)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body

    @property
    def closed(self) -> bool:
        return self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


class Client:
    """Keep-alive connections to one server, opened as needed and reused when idle."""

    def __init__(self, host: str, port: int, timeout_s: float):
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._idle: list[Connection] = []
        self.stale_retries = 0  # requests resent because an idle connection had been closed
        self._encoded: dict[int, bytes] = {}

    async def send(self, request: Request, scheduled: float | None = None) -> Answer:
        raw = self._encoded.get(id(request))
        if raw is None:
            raw = self._encoded[id(request)] = request.encode(f"{self.host}:{self.port}")
        start = time.perf_counter()
        late = 0.0 if scheduled is None else max(0.0, start - scheduled)
        try:
            connection, (status, headers, body) = await asyncio.wait_for(
                self._exchange(raw), self.timeout_s
            )
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            latency = time.perf_counter() - start
            return Answer(request.name, 0, latency, late, None, b"", error, sent_at=start)
        if not connection.closed:
            self._idle.append(connection)
        latency = time.perf_counter() - start
        retry_after = headers.get("retry-after")
        return Answer(request.name, status, latency, late, retry_after, body, sent_at=start)

    async def _exchange(self, raw: bytes) -> tuple[Connection, tuple[int, dict[str, str], bytes]]:
        """On an idle connection if there is one. The server closes a keep-alive connection that
        has been idle a while (uvicorn: 5 s); a request written just then finds it closed before
        any answer, and was never seen, so it goes again on a new connection, as HTTP clients
        do. A connection closed after part of an answer is an error."""
        while self._idle:
            connection = self._idle.pop()
            try:
                return connection, await connection.exchange(raw)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                connection.close()
                if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                    raise
                self.stale_retries += 1
            except BaseException:  # timed out (cancelled) or a malformed answer
                connection.close()
                raise
        connection = await Connection.open(*self.address)
        try:
            return connection, await connection.exchange(raw)
        except BaseException:
            connection.close()
            raise

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()


def freeze_heap() -> None:
    """Every object alive now out of the cyclic collector's reach: the load generator has
    imported torch, and a full collection walking its objects (120 ms on a 2-vCPU EPYC) would
    delay the sends and answers due meanwhile, a pause of the client's counted as the server's.
    No collection first: it would take as long, inside the caller's timing; what garbage this
    freezes stays until the process ends."""
    gc.freeze()


async def closed_loop(
    client: Client,
    pick: Callable[[int], Request],
    concurrency: int,
    count: int | None = None,
    duration_s: float | None = None,
    on_answer: Callable[[Answer], None] | None = None,
    pause_after_503_s: float = 0.0,
) -> list[Answer]:
    """`concurrency` workers, each sending its next request when the last is answered, until
    `count` requests have been sent or `duration_s` has passed. pick(i) is the i-th request.
    A worker refused with 503 waits about pause_after_503_s before its next request: one that
    re-sends at once turns a refusal into a retry storm, and the figures then describe the storm.
    Each wait is drawn from 0.5x to 1.5x of it, else the workers refused together come back
    together, a burst every pause."""
    if (count is None) == (duration_s is None):
        raise ValueError("give exactly one of count and duration_s")
    freeze_heap()
    answers: list[Answer] = []
    end = None if duration_s is None else time.perf_counter() + duration_s
    next_index = 0
    jitter = random.Random(0)

    async def worker() -> None:
        nonlocal next_index
        while (count is None or next_index < count) and (end is None or time.perf_counter() < end):
            index, next_index = next_index, next_index + 1
            answer = await client.send(pick(index))
            answers.append(answer)
            if on_answer is not None:
                on_answer(answer)
            if answer.status == 503 and pause_after_503_s:
                await asyncio.sleep(pause_after_503_s * jitter.uniform(0.5, 1.5))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answers


async def open_loop(
    client: Client, request: Request, rate_per_s: float, duration_s: float, seed: int = 0
) -> list[Answer]:
    """Poisson arrivals at `rate_per_s` for `duration_s`: each request is sent at its time
    whatever happened to the ones before, as independent clients would."""
    freeze_heap()
    rng = random.Random(seed)
    start = time.perf_counter()
    schedule, t = [], rng.expovariate(rate_per_s)
    while t < duration_s:
        schedule.append(start + t)
        t += rng.expovariate(rate_per_s)
    tasks = []
    for at in schedule:
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(client.send(request, scheduled=at)))
    return list(await asyncio.gather(*tasks))


def quantile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (nearest rank), or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
