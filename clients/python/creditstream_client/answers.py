"""What an HTTP answer means to a call: its decoded value, a typed error, or "try again"."""

from __future__ import annotations

import json
from typing import Any

import httpx

from creditstream_client.errors import ConnectionFailed, CreditstreamError, error_from_response
from creditstream_client.retry import retryable_answer

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


def connection_failed(exc: Exception, attempts: int) -> ConnectionFailed:
    return ConnectionFailed(
        0, "connection_error", f"no answer after {attempts} attempt(s): {type(exc).__name__}: {exc}"
    )
