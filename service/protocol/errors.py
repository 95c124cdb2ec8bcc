"""The one place that turns exceptions into HTTP responses.

Everything the service refuses becomes a `ServiceError` (status, code, field, message) here, then
one renderer writes it in the caller's protocol: v1 `{"error": {"code", "message", "field"}}`,
v2 (Open Inference Protocol) `{"error": "..."}`. Rejections are counted here too, so every
refusal is counted exactly once. Stack traces go to the log, never into a body.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from preprocessing.errors import InputError, TooManySamples
from service.engine import DeadlineExceeded, EngineError, NotReady, QueueFull
from service.metrics import ServiceMetrics

log = logging.getLogger(__name__)

RETRY_AFTER_S = "1"
MAX_LISTED_ERRORS = 5


class ServiceError(Exception):
    status = 500
    code = "internal"
    rejection: str | None = None  # rfcls_rejections_total reason, if this refusal counts as one

    def __init__(self, message: str, field: str | None = None):
        super().__init__(f"{field}: {message}" if field else message)
        self.message = message
        self.field = field

    @property
    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(ServiceError):
    status, code, rejection = 400, "invalid_request", "invalid"


class Unauthorized(ServiceError):
    status, code, rejection = 401, "unauthorized", "unauthorized"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class ModelNotFound(ServiceError):
    status, code, rejection = 404, "model_not_found", "invalid"


class RequestTimeout(ServiceError):
    status, code, rejection = 408, "request_timeout", "body_timeout"

    @property
    def headers(self) -> dict[str, str]:
        # the rest of the body may still come: on this connection it would be read as the next
        # request (RFC 9110 15.5.9: a 408 closes)
        return {"Connection": "close"}


class PayloadTooLarge(ServiceError):
    status, code, rejection = 413, "payload_too_large", "too_large"


class UnsupportedMediaType(ServiceError):
    status, code, rejection = 415, "unsupported_media_type", "invalid"


class HeaderFieldsTooLarge(ServiceError):
    """Answered by the HTTP protocol itself (head_limit.py), before the app has the request: it
    counts in no metric, and only v1's error shape is possible, the path being unread."""

    status, code = 431, "header_fields_too_large"


class InvalidFields(ServiceError):
    status, code, rejection = 422, "validation_error", "invalid"


class ClientClosed(ServiceError):
    """nginx's 499: nobody reads it, but the request's metrics and log say what became of it."""

    status, code = 499, "client_closed_request"


class InternalError(ServiceError):
    status, code = 500, "internal"


class Unavailable(ServiceError):
    status, code = 503, "unavailable"

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": RETRY_AFTER_S}


class Overloaded(Unavailable):
    code, rejection = "queue_full", "queue_full"


class DeadlinePassed(ServiceError):
    status, code, rejection = 504, "deadline_exceeded", "deadline"


class HTTPError(ServiceError):
    """A routing-level refusal from Starlette (unknown path, wrong method), with its headers: a
    405's Allow lists the methods the path takes (RFC 9110 15.5.6)."""

    code = "http_error"

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self._headers = dict(headers or {})

    @property
    def headers(self) -> dict[str, str]:
        return self._headers


GENERIC_INTERNAL = "internal error; the request was not classified"


def as_service_error(exc: BaseException) -> ServiceError:
    """Map any exception the service may raise to the ServiceError that answers it."""
    match exc:
        case ServiceError():
            return exc
        case TooManySamples():
            return PayloadTooLarge(exc.message, exc.field)
        case InputError():
            return BadRequest(exc.message, exc.field)
        case RequestValidationError():
            return from_validation_errors(exc.errors())
        case ValidationError():
            return from_validation_errors(exc.errors())
        case QueueFull():
            return Overloaded(f"queue full: {exc}; retry later")
        case NotReady():
            return Unavailable(str(exc))
        case DeadlineExceeded():
            return DeadlinePassed(f"deadline passed while queued: {exc}")
        case EngineError():  # BatchFailed: the engine has logged the cause
            return InternalError(GENERIC_INTERNAL)
        case StarletteHTTPException():
            return HTTPError(exc.status_code, str(exc.detail), exc.headers)
        case ClientDisconnect():
            return ClientClosed("the client closed the connection while sending its body")
        case _:
            return InternalError(GENERIC_INTERNAL)


def from_validation_errors(errors: Sequence[Any]) -> ServiceError:
    """pydantic/FastAPI errors -> one error naming the first bad field and listing all of them.
    Unparseable JSON is a 400 (the body is not JSON at all), everything else a 422."""
    first = errors[0]
    if first["type"] in ("json_invalid", "json_type"):
        return BadRequest(f"malformed JSON: {first['msg']}", "body")
    # the first error's field is the error's own, which its rendering puts in front
    parts = [first["msg"]] + [
        f"{_field(e['loc'])}: {e['msg']}" for e in errors[1:MAX_LISTED_ERRORS]
    ]
    if len(errors) > MAX_LISTED_ERRORS:
        parts.append(f"and {len(errors) - MAX_LISTED_ERRORS} more")
    return InvalidFields("; ".join(parts), _field(first["loc"]))


def _field(loc: Sequence[Any]) -> str:
    # FastAPI prefixes where the value came from ("query", "body", "path"); the name is what helps
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] in ("query", "body", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def is_v2(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


def error_body(path: str, error: ServiceError) -> dict[str, Any]:
    if is_v2(path):
        return {"error": str(error)}
    return {"error": {"code": error.code, "message": error.message, "field": error.field}}


def render(path: str, error: ServiceError) -> Response:
    return JSONResponse(error_body(path, error), status_code=error.status, headers=error.headers)


class UnexpectedErrorMiddleware:
    """Answers an exception nothing else took (a bug) with the generic 500 and logs it with its
    traceback. Starlette's last-resort handler would answer too, but then re-raises to the
    server, and uvicorn closes the connection under the client's next request on it."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception:
            if started:  # half an answer is out: only closing the connection can end it
                raise
            log.exception("unexpected error answering %s %s", scope["method"], scope["path"])
            await render(scope["path"], InternalError(GENERIC_INTERNAL))(scope, receive, send)


def install_error_handlers(app: FastAPI, metrics: ServiceMetrics) -> None:
    """The handlers, and the middleware for what they do not take: call before adding other
    middleware, so that it sits inside them (their metrics count its 500s)."""
    app.add_middleware(UnexpectedErrorMiddleware)

    async def handle(request: Request, exc: Exception) -> Response:
        # no logging here: the engine logs a failed batch, UnexpectedErrorMiddleware the rest
        error = as_service_error(exc)
        if error.rejection is not None:
            metrics.reject(error.rejection)
        return render(request.url.path, error)

    for exc_class in (
        ServiceError,
        InputError,
        RequestValidationError,
        ValidationError,
        EngineError,
        StarletteHTTPException,
        ClientDisconnect,
        Exception,  # raised by middleware outside UnexpectedErrorMiddleware
    ):
        app.add_exception_handler(exc_class, handle)
