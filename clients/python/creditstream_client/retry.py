"""When to try again, and how long to wait: exponential backoff with full jitter.

Retried: 503, 409 `request_in_progress`, timeouts and dropped connections. A POST carries the
same Idempotency-Key on every attempt, so a retry after a lost answer replays the first
answer instead of applying the operation twice. Other 4xx answers are final.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx

# a timeout (connect, read, write, pool) or a connection refused, reset or closed early
RETRYABLE_EXCEPTIONS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay_s: float = 0.25
    max_delay_s: float = 8.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def delay_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        """The wait before attempt `attempt + 1` (attempt counts from 1): full jitter over an
        exponentially growing window, and never less than the server's Retry-After."""
        window = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        wait = random.uniform(0, window)
        if retry_after_s is not None:
            wait = max(wait, min(retry_after_s, self.max_delay_s))
        return wait


def retryable_answer(status: int, code: str | None) -> bool:
    return status == 503 or (status == 409 and code == "request_in_progress")


def retry_after_of(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return float(value) if value else None
    except ValueError:
        return None
