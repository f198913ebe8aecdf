"""One signed POST of an outbound webhook event, as every delivery sends it and as a test event
is sent: the body signed with the endpoint's secret (`X-Signature`, core/signatures.py), through
egress/ (the address policy, the pinned connect, the whole exchange's deadline), no redirects
followed (a 3xx is a failed attempt)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from core.signatures import sign
from egress import Egress, Failed, UrlRefused

ANSWER_BODY_BYTES = 64 * 1024  # read (inside the deadline) so the connection can be reused
USER_AGENT = "creditstream-webhooks/1"


@dataclass(frozen=True)
class Sent:
    status_code: int | None  # None: no answer (refused, unreachable, past the deadline)
    error: str | None  # None: the receiver answered 2xx
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.error is None


async def send_signed(
    egress: Egress,
    url: str,
    secret: str,
    body: bytes,
    event_type: str,
    event_id: str,
) -> Sent:
    """POST `body` to `url` and say how it went; never raises for the receiver's doing."""
    started = time.monotonic()
    status: int | None = None
    error: str | None = None
    try:
        status = await _post(egress, url, secret, body, event_type, event_id)
        if not 200 <= status < 300:
            error = f"HTTP {status}"
    except (UrlRefused, Failed) as exc:
        error = str(exc)
    return Sent(status, error, int((time.monotonic() - started) * 1000))


async def _post(
    egress: Egress,
    url: str,
    secret: str,
    body: bytes,
    event_type: str,
    event_id: str,
) -> int:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Signature": sign(secret, body, int(time.time())),
        "X-Creditstream-Event": event_type,
        "X-Creditstream-Event-Id": event_id,
    }
    async with egress.open("POST", url, egress.webhooks, content=body, headers=headers) as response:
        read = 0
        async for chunk in response.chunks():
            read += len(chunk)
            if read > ANSWER_BODY_BYTES:
                break
        return response.status_code
