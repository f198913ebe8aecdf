"""What an HTTP answer means to a call: its decoded value, a typed error, or "try again"."""

from __future__ import annotations

import json
from typing import Any

import httpx

from creditstream_client.errors import ConnectionFailed, CreditstreamError, error_from_response
from creditstream_client.retry import Attempts, retry_after_of, retryable_answer

VERSION = "0.1.0"
USER_AGENT = f"creditstream-client-python/{VERSION}"


def default_headers(key: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {key}",
        "User-Agent": USER_AGENT,
        "Accept": "application/json",
    }


def decode(response: httpx.Response) -> Any:
    """The answer's JSON, or the typed error it stands for (raised)."""
    try:
        payload = response.json() if response.content else None
    except json.JSONDecodeError:
        payload = None
    if response.is_success:
        return payload
    raise error_from_response(response.status_code, payload)


def is_retryable(error: CreditstreamError) -> bool:
    return retryable_answer(error.status, error.code)


def wait_after_answer(
    attempts: Attempts, error: CreditstreamError, response: httpx.Response
) -> float | None:
    """How long to wait before trying again after this error answer, or None: give up."""
    if not is_retryable(error):
        return None
    retry_after = retry_after_of(response)
    if error.status == 429 and retry_after is None:
        return None  # a limit that does not say when it lifts: waiting blindly will not help
    return attempts.next_wait(retry_after)


def gave_up(error: CreditstreamError, attempts: Attempts) -> CreditstreamError:
    """The last answer's typed error, its message saying that the retries ran out."""
    if attempts.count > 1 and is_retryable(error):
        error.message = f"{error.message} ({attempts.summary()}; last answer {error.status})"
        error.args = (f"{error.status} {error.code}: {error.message}",)
    error.attempts = attempts.count
    return error


def connection_failed(exc: Exception, attempts: Attempts) -> ConnectionFailed:
    failed = ConnectionFailed(
        0,
        "connection_error",
        f"no answer: {type(exc).__name__}: {exc} ({attempts.summary()}; last answer: none)",
    )
    failed.attempts = attempts.count
    return failed
