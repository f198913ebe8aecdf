"""Every error leaves the API as `{"error": {"code", "message", ...details}}`; one table maps
domain and storage errors to status codes."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from api.responses import JSONResponse
from core import errors as domain
from storage.connection_errors import DatabaseUnavailable

log = logging.getLogger("creditstream.api")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


STATUS_BY_ERROR: list[tuple[type[Exception], int]] = [
    (domain.NotFound, 404),
    (domain.InsufficientCredits, 402),
    (domain.DailyLimitExceeded, 429),
    (domain.FeatureLimitExceeded, 429),
    (domain.InvalidState, 409),
    (domain.ConcurrentUpdate, 409),
    (domain.RequestInProgress, 409),
    (domain.InvalidInput, 422),
    (domain.CreditError, 400),
]


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **details}}


def to_status_and_body(exc: Exception) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The status, JSON body and extra headers an error is answered with."""
    if isinstance(exc, ApiError):
        return exc.status, error_body(exc.code, exc.message, **exc.details), {}
    if isinstance(exc, DatabaseUnavailable):
        return (
            503,
            error_body(
                "service_unavailable",
                "The database is unavailable; retry shortly. Nothing was changed.",
            ),
            {"Retry-After": "1"},
        )
    if isinstance(exc, domain.CreditError):
        status = next(s for cls, s in STATUS_BY_ERROR if isinstance(exc, cls))
        headers = {}
        if isinstance(exc, (domain.DailyLimitExceeded, domain.FeatureLimitExceeded)):
            headers["Retry-After"] = str(exc.details["retry_after"])
        return status, error_body(exc.code, exc.message, **exc.details), headers
    raise TypeError(f"Expected an API or domain error, got {type(exc).__name__}") from exc


def error_response(exc: Exception) -> Response:
    status, body, headers = to_status_and_body(exc)
    return JSONResponse(body, status_code=status, headers=headers)


async def handle_known(request: Request, exc: Exception) -> Response:
    return error_response(exc)


async def handle_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    code = codes.get(exc.status_code, "http_error")
    message = {
        404: f"No route {request.method} {request.url.path}",
        405: f"Method {request.method} is not allowed on {request.url.path}",
    }.get(exc.status_code, str(exc.detail))
    return JSONResponse(
        error_body(code, message), status_code=exc.status_code, headers=dict(exc.headers or {})
    )


async def handle_invariant(request: Request, exc: Exception) -> Response:
    # a bug in the engine, not a refusal: logged with its traceback, answered as any other 500
    log.error(
        "invariant violated on %s %s: %s", request.method, request.url.path, exc, exc_info=exc
    )
    return _internal_error()


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _internal_error()


def _internal_error() -> Response:
    return JSONResponse(
        error_body("internal_error", "An unexpected error occurred; nothing was committed."),
        status_code=500,
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ApiError: handle_known,
    domain.CreditError: handle_known,
    DatabaseUnavailable: handle_known,
    domain.InvariantViolated: handle_invariant,
    HTTPException: handle_http,
    Exception: handle_unexpected,
}
