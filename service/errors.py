"""Errors as JSON: every error response is ``{"error": "..."}`` plus optional fields.

No exception text from a driver ever reaches a response: drivers' messages can hold
SQL, hostnames or data. Those details go to the log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

logger = logging.getLogger(__name__)


class ApiError(Exception):
    status_code = 400

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra


class BadRequest(ApiError):
    status_code = 400


class NotFound(ApiError):
    status_code = 404


class PayloadTooLarge(ApiError):
    status_code = 413


class UnsupportedMediaType(ApiError):
    status_code = 415


class UnprocessableEntity(ApiError):
    status_code = 422


class ServiceUnavailable(ApiError):
    """A dependency is down: the client may retry after ``retry_after`` seconds."""

    status_code = 503

    def __init__(self, message: str, *, service: str, retry_after: int = 1, **extra: Any) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))}, service=service, **extra)
        self.service = service


class WriteOutcomeUnknown(ApiError):
    """A write reached the database, then the connection broke (502) or the attempt timed
    out (504) before its answer: it may or may not have been committed. Saying 503 here
    would tell the client that nothing happened, which may be false (a primary killed
    between its commit and its reply); the client should read the product back."""

    def __init__(self, message: str, *, service: str, timed_out: bool, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))}, service=service,
                         outcome="unknown")
        self.status_code = 504 if timed_out else 502


def error_response(
    status_code: int, message: str, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status_code, headers=dict(headers or {}))


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.message, headers=exc.headers, **exc.extra)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    # Starlette's own 404 (no route) and 405 (route without that method, with Allow).
    assert isinstance(exc, HTTPException)
    messages = {404: "not found", 405: "method not allowed"}
    message = messages.get(exc.status_code, str(exc.detail) if exc.detail else "error")
    return error_response(exc.status_code, message, headers=exc.headers)


async def client_disconnect_handler(request: Request, exc: Exception) -> Response:
    # Nobody is left to read this; answer something valid and quiet.
    return error_response(400, "client disconnected before sending the whole body")


async def unhandled_exception_handler(request: Request, exc: Exception) -> Response:
    # Last resort: a bug. Log it all, tell the client nothing about it.
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error")


EXCEPTION_HANDLERS = {
    ApiError: api_error_handler,
    HTTPException: http_exception_handler,
    ClientDisconnect: client_disconnect_handler,
    Exception: unhandled_exception_handler,
}
