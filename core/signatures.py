"""Webhook signatures: `X-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">` (Stripe's scheme)."""

from __future__ import annotations

import hashlib
import hmac

TOLERANCE_S = 300
MAX_TIMESTAMP_DIGITS = 12  # unix seconds; a longer `t=` is malformed, not a huge number


class BadSignature(Exception):
    """The signature is missing, malformed, wrong or too old; the request changes nothing."""


def sign(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(
    secret: str, body: bytes, header: str | None, now: float, tolerance_s: int = TOLERANCE_S
) -> None:
    if not header:
        raise BadSignature("Missing X-Signature header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        # ASCII digits only: "²".isdigit() is true, yet int("²") fails
        if (
            name == "t"
            and value.isascii()
            and value.isdigit()
            and len(value) <= MAX_TIMESTAMP_DIGITS
        ):
            timestamp = int(value)
        elif name == "v1" and value.isascii():  # compare_digest refuses non-ASCII text
            candidates.append(value)
    if timestamp is None or not candidates:
        raise BadSignature("Expected X-Signature: t=<unix seconds>,v1=<hex digest>")
    if abs(now - timestamp) > tolerance_s:
        raise BadSignature(f"Signature timestamp is more than {tolerance_s} s from now")
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise BadSignature("Signature does not match the body")
