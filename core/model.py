"""Grants, holds and journal entries, and the validation every amount and account id passes.

The rules that move credits between them live on `core.account.Account`.
Invariants kept there and checked by `creditstream audit`:
  balance == sum(entry.delta) == sum(grant.remaining);
  held == sum(open hold amounts) == sum(grant.reserved);  held <= balance.
An open hold reserves credits of specific grants (soonest-expiring first) when it opens, so a
grant's expiry never takes credits a hold will capture, and those credits fund nothing else.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from core.errors import (
    AmountTooLarge,
    InvalidAccountId,
    InvalidInput,
)
from core.events import iso

MAX_AMOUNT = 10**12  # largest amount one operation may move
MAX_BALANCE = 10**15  # keeps every sum far inside BIGINT
FAR_FUTURE = datetime.max.replace(tzinfo=UTC)

_ACCOUNT_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
_WALLET = re.compile(r"0x[0-9a-fA-F]{40}")
# dot segments: every URL normaliser drops them (RFC 3986 §5.2.4), so /v1/accounts/.. could never
# name such an account, and a raw %2e%2e would reach it only by accident
_DOT_SEGMENTS = frozenset({".", ".."})
PROMOTIONAL_REASONS = frozenset({"trial", "promo", "promotion", "bonus", "referral"})


# a version-4 UUID's fixed bits (RFC 9562 §5.4): the same ids `uuid.uuid4().hex` gives, made
# without building a UUID object (a third of the time, and an id is made for every operation)
_V4_KEEP = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_V4_SET = (0x4 << 76) | (0x2 << 62)


def new_id(prefix: str) -> str:
    bits = int.from_bytes(os.urandom(16), "big") & _V4_KEEP | _V4_SET
    return f"{prefix}_{bits:032x}"


def normalise_account_id(raw: object) -> str:
    """Validate an account id; EVM wallet addresses are case-insensitive, so they are lowered."""
    if not isinstance(raw, str) or not _ACCOUNT_ID.fullmatch(raw) or raw in _DOT_SEGMENTS:
        raise InvalidAccountId(
            "Expected an account id of 1-128 characters from [A-Za-z0-9_.:@-] (not . or ..), "
            f"got {str(raw)[:140]!r}"
        )
    # only a 42-character id starting 0x can be a wallet: most ids skip the second pattern
    return raw.lower() if len(raw) == 42 and raw[:2] == "0x" and _WALLET.fullmatch(raw) else raw


def check_amount(amount: object, name: str = "amount") -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidInput(f"Expected {name} to be an integer number of credits, got {amount!r}")
    if amount < 1:
        raise InvalidInput(f"Expected {name} to be at least 1, got {amount}")
    if amount > MAX_AMOUNT:
        raise AmountTooLarge(f"Expected {name} to be at most {MAX_AMOUNT}, got {amount}")
    return amount


def checked_ttl(ttl_seconds: object, default: timedelta, longest_s: int) -> timedelta:
    """A caller's `ttl_seconds` (1..longest_s), or `default` when none was given."""
    if ttl_seconds is None:
        return default
    if (
        isinstance(ttl_seconds, bool)
        or not isinstance(ttl_seconds, int)
        or not (1 <= ttl_seconds <= longest_s)
    ):
        raise InvalidInput(f"Expected ttl_seconds between 1 and {longest_s}, got {ttl_seconds!r}")
    return timedelta(seconds=ttl_seconds)


def grant_kind(reason: str) -> str:
    """Trial and promotional credits are spent before paid ones at equal expiry."""
    head = reason.split(":", 1)[0].lower()
    if head == "trial":
        return "trial"
    return "promo" if head in PROMOTIONAL_REASONS else "paid"


def seconds_until_next_utc_day(now: datetime) -> int:
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((tomorrow - now).total_seconds() + 0.999))


@dataclass
class Grant:
    grant_id: str
    account_id: str
    amount: int
    remaining: int
    reason: str
    kind: str
    expires_at: datetime | None
    created_at: datetime
    ref: str | None = None
    reserved: int = 0  # part of `remaining` allocated to open holds
    metadata: dict[str, Any] = field(default_factory=dict)  # the caller's (kept in its entry)

    @property
    def free(self) -> int:
        return self.remaining - self.reserved

    def consumption_key(self) -> tuple[datetime, int, datetime, str]:
        # soonest expiry first, never-expiring last; then trial/promo before paid; then oldest
        return (
            self.expires_at or FAR_FUTURE,
            1 if self.kind == "paid" else 0,
            self.created_at,
            self.grant_id,
        )

    def is_due(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now and self.free > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "grant_id": self.grant_id,
            "account_id": self.account_id,
            "amount": self.amount,
            "remaining": self.remaining,
            "reserved": self.reserved,
            "reason": self.reason,
            "kind": self.kind,
            "ref": self.ref,
            "metadata": self.metadata,
            "expires_at": iso(self.expires_at),
            "created_at": iso(self.created_at),
        }


@dataclass
class Hold:
    hold_id: str
    account_id: str
    amount: int
    status: str
    created_at: datetime
    expires_at: datetime
    ref: str | None = None
    captured_amount: int | None = None
    release_reason: str | None = None
    closed_at: datetime | None = None
    job_id: str | None = None
    funding: list[dict[str, Any]] = field(default_factory=list)
    # which grants' credits this hold reserved, in the order a capture consumes them
    allocation: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)  # the caller's
    price: dict[str, Any] = field(default_factory=dict)  # the priced operation, model, params

    OPEN = "open"
    CAPTURED = "captured"
    RELEASED = "released"
    EXPIRED = "expired"

    def is_due(self, now: datetime) -> bool:
        return self.status == Hold.OPEN and self.expires_at <= now

    def to_dict(self) -> dict[str, Any]:
        return {
            "hold_id": self.hold_id,
            "account_id": self.account_id,
            "amount": self.amount,
            "status": self.status,
            "ref": self.ref,
            "captured_amount": self.captured_amount,
            "release_reason": self.release_reason,
            "funding": self.funding,
            "allocation": self.allocation,
            "metadata": self.metadata,
            "price": self.price or None,
            "job_id": self.job_id,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "closed_at": iso(self.closed_at),
        }


@dataclass(frozen=True)
class Entry:
    account_id: str
    seq: int
    type: str
    amount: int
    delta: int
    held_delta: int
    reason: str
    ref: str | None
    op_id: str
    metadata: dict[str, Any]
    at: datetime
    idempotency_key: str | None = None
