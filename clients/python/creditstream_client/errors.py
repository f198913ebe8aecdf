"""Typed errors from the API's error envelope `{"error": {"code", "message", ...details}}`.

The class is chosen by the error's `code` first (e.g. `insufficient_credits`), then by the HTTP
status (e.g. any 403 is a `PermissionDenied`), so a code the client does not know yet still
lands in the right family.
"""

from __future__ import annotations

from typing import Any


class CreditstreamError(Exception):
    """An answer of the API that is not a success, or no answer at all (`status` 0)."""

    def __init__(
        self, status: int, code: str, message: str, body: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body: dict[str, Any] = body or {}
        self.attempts = 1  # how many attempts the call made before this error was raised

    def detail(self, name: str) -> Any:
        """A detail field of the error object (e.g. `shortfall`), or None."""
        return self.body.get(name)


class ConnectionFailed(CreditstreamError):
    """No answer after every attempt: the server was unreachable, dropped the connection or
    timed out. A POST may have been applied; retrying it with the same idempotency key is safe."""


class BadRequest(CreditstreamError):
    """400: malformed JSON or an invalid Idempotency-Key."""


class AuthenticationError(CreditstreamError):
    """401: no credentials, or a bad or expired key or token."""


class InsufficientCredits(CreditstreamError):
    """402: not enough available credits; nothing was written."""

    @property
    def required(self) -> int:
        return int(self.body.get("required", 0))

    @property
    def available(self) -> int:
        return int(self.body.get("available", 0))

    @property
    def shortfall(self) -> int:
        return int(self.body.get("shortfall", 0))


class PermissionDenied(CreditstreamError):
    """403: a user token on another account, or a server-only operation."""


class NotFound(CreditstreamError):
    """404: unknown account (on read), hold, charge, job or webhook endpoint."""


class Conflict(CreditstreamError):
    """409: the operation conflicts with the current state."""


class InvalidState(Conflict):
    """409 `invalid_state`: e.g. a capture after a release."""


class RefundExceedsSpend(Conflict):
    """409 `refund_exceeds_spend`: more than is left to refund was asked for."""

    @property
    def refundable(self) -> int:
        return int(self.body.get("refundable", 0))


class RequestInProgress(Conflict):
    """409 `request_in_progress`: the same key's first request is still running (retried)."""


class ProviderTaskConflict(Conflict):
    """409 `provider_task_conflict`: a job for that provider task exists already."""


class PayloadTooLarge(CreditstreamError):
    """413: the body is over the server's limit."""


class ValidationError(CreditstreamError):
    """422: a field is missing, unknown or out of range (`errors` lists them when given)."""

    @property
    def errors(self) -> list[Any]:
        found = self.body.get("errors")
        return list(found) if isinstance(found, list) else []


class IdempotencyKeyReused(ValidationError):
    """422 `idempotency_key_reused`: the key was used before with another body."""


class RateLimited(CreditstreamError):
    """429: a limit says not now; `retry_after` says when (seconds), when known."""

    @property
    def retry_after(self) -> int | None:
        value = self.body.get("retry_after")
        return int(value) if isinstance(value, int | float) else None


class DailyLimitExceeded(RateLimited):
    """429 `daily_limit_exceeded`: the trial's credits per UTC day are spent."""


class FeatureLimitExceeded(RateLimited):
    """429 `feature_limit_exceeded`: the plan's limit for this operation is used up."""


class Unavailable(CreditstreamError):
    """503: the server cannot reach its database right now (retried)."""


BY_CODE: dict[str, type[CreditstreamError]] = {
    "insufficient_credits": InsufficientCredits,
    "invalid_state": InvalidState,
    "refund_exceeds_spend": RefundExceedsSpend,
    "request_in_progress": RequestInProgress,
    "provider_task_conflict": ProviderTaskConflict,
    "idempotency_key_reused": IdempotencyKeyReused,
    "daily_limit_exceeded": DailyLimitExceeded,
    "feature_limit_exceeded": FeatureLimitExceeded,
}

BY_STATUS: dict[int, type[CreditstreamError]] = {
    400: BadRequest,
    401: AuthenticationError,
    402: InsufficientCredits,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationError,
    429: RateLimited,
    503: Unavailable,
}


def error_from_response(status: int, payload: Any) -> CreditstreamError:
    """The typed error for an answer's status and decoded JSON body (anything, even not JSON)."""
    body: dict[str, Any] = {}
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        body = payload["error"]
    code = str(body.get("code") or f"http_{status}")
    message = str(body.get("message") or f"HTTP {status}")
    cls = BY_CODE.get(code) or BY_STATUS.get(status) or CreditstreamError
    return cls(status, code, message, body)
