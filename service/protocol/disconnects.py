"""A request whose client has gone is withdrawn from the engine, not computed and answered into
a closed socket: uvicorn only notes the disconnect (its `receive` then says so) and never
cancels the handler, so without this the device spent a whole request on nobody and the
request counted as answered."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from service.protocol.errors import ClientClosed

T = TypeVar("T")


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result, or ClientClosed once the client disconnects first (work is then
    cancelled, which withdraws its frames from the engine's queue). Call after the body is read:
    `receive` then has nothing to give but the disconnect."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():  # the client went, or this handler was cancelled itself
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise ClientClosed("the client closed the connection before the answer")
    return task.result()


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
