"""Verify an outbound webhook's `X-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`."""

from __future__ import annotations

import hashlib
import hmac
import time

MAX_TIMESTAMP_DIGITS = 12


def verify_webhook(
    secret: str,
    body: bytes,
    signature_header: str | None,
    tolerance_s: float = 300,
    now: float | None = None,
) -> bool:
    """True when `body` (the raw bytes, before any JSON parsing) was signed with `secret` at a
    time within `tolerance_s` of now. The digest is compared in constant time."""
    if not signature_header:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in signature_header.split(","):
        name, _, value = part.strip().partition("=")
        if (
            name == "t"
            and value.isascii()
            and value.isdigit()
            and len(value) <= MAX_TIMESTAMP_DIGITS
        ):
            timestamp = int(value)
        elif name == "v1" and value.isascii():
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    # every candidate is compared, so the time taken says nothing about which one matched
    matches = [hmac.compare_digest(expected, candidate) for candidate in candidates]
    return any(matches)
