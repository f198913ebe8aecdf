"""When to try again, and how long to wait: exponential backoff with full jitter, each wait
capped, all of them bounded by a time budget.

Retried: 503 (the database is away, e.g. a PostgreSQL failover), 502 and 504 (a proxy in front
could not reach an instance), 429 with a `Retry-After` that fits the budget, 409
`request_in_progress`, timeouts and dropped connections. Only a call that is safe to repeat is
retried: a GET, PUT or DELETE, or a POST with an Idempotency-Key (every write sends one), which
replays the first answer instead of applying the operation twice. Other 4xx answers are final.

The default budget (30 s) outlasts a primary failover (about Patroni's ttl, 10 s, plus the
promotion): a call made during one answers once the new primary takes writes.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import httpx

# a timeout (connect, read, write, pool) or a connection refused, reset or closed early
RETRYABLE_EXCEPTIONS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)

# connections idle this long are closed by the client, before the server's own idle close (5 s
# in `creditstream serve`, as in uvicorn): at the same timeout, a request sent on a pooled
# connection in the instant the server closes it is reset with no answer, and a POST without a
# key could not be sent again
POOL_LIMITS = httpx.Limits(keepalive_expiry=4.0)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})  # repeatable by definition


@dataclass(frozen=True)
class RetryPolicy:
    """`total_s`: no attempt starts later than this after the call began (an attempt in flight
    still runs to its own timeout). `max_attempts` (None: as many as the budget allows) stops
    earlier. `max_delay_s` caps each wait, so a call answers within about that of the server
    coming back."""

    max_attempts: int | None = None
    base_delay_s: float = 0.25
    max_delay_s: float = 2.0
    total_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.total_s < 0:
            raise ValueError("total_s must not be negative")

    def delay_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        """The wait before attempt `attempt + 1` (attempt counts from 1): full jitter over an
        exponentially growing window capped at `max_delay_s`, and never less than the
        server's Retry-After."""
        window = min(self.max_delay_s, self.base_delay_s * 2 ** min(attempt - 1, 30))
        wait = random.uniform(0, window)
        if retry_after_s is not None:
            wait = max(wait, retry_after_s)
        return wait


class Attempts:
    """The retries of one call: counts them and says how long to wait before the next, or
    None when the call must give up (not repeatable, out of attempts, or out of budget)."""

    def __init__(self, policy: RetryPolicy, repeatable: bool) -> None:
        self.policy = policy
        self.repeatable = repeatable
        self.count = 0
        self.started = time.monotonic()

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def next_wait(self, retry_after_s: float | None = None) -> float | None:
        policy = self.policy
        if not self.repeatable:
            return None
        if policy.max_attempts is not None and self.count >= policy.max_attempts:
            return None
        left = policy.total_s - self.elapsed_s()
        if left <= 0 or (retry_after_s is not None and retry_after_s > left):
            return None  # waiting as long as the server asks would outlast the budget
        return min(policy.delay_s(self.count, retry_after_s), left)

    def summary(self) -> str:
        return (
            f"gave up after {self.count} attempt(s) in {self.elapsed_s():.1f} s"
            f" (retry budget {self.policy.total_s:g} s)"
        )


def repeatable(method: str, idempotency_key: str | None) -> bool:
    return method.upper() in SAFE_METHODS or idempotency_key is not None


def retryable_answer(status: int, code: str | None) -> bool:
    """An answer worth trying again (a 429 only when its Retry-After fits the budget)."""
    return status in (429, 502, 503, 504) or (status == 409 and code == "request_in_progress")


def retry_after_of(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return None if seconds is None or seconds < 0 else seconds
