"""Optional API key: `Authorization: Bearer <key>` on the classification, model and v2 model
routes when RFCLS_API_KEY is set. Health and metrics stay open for probes and scrapers."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import Request

from service.protocol.errors import Unauthorized


def api_key_guard(api_key: str | None) -> Callable[[Request], Awaitable[None]] | None:
    """A FastAPI dependency that refuses requests without the key, or None when no key is set."""
    if api_key is None:
        return None
    expected = api_key.encode()

    async def require_api_key(request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # compare_digest: the time taken must not reveal how much of the key was right
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            raise Unauthorized("missing or wrong API key; send 'Bearer <key>'", "Authorization")

    return require_api_key
