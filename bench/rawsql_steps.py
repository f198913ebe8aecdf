"""The steps a hand-written hold and capture share (bench/rawsql.py): ensuring and locking the
account, allocating grants, saving the account, recording the entry and the event (one round
trip per statement, values encoded as SQLAlchemy encodes them), and the account snapshot the API
would answer.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bench.rawsql_statements import (
    INSERT_ACCOUNT,
    INSERT_ENTRY,
    INSERT_EVENT,
    LIVE_GRANTS,
    LOCK_ACCOUNT,
    UPDATE_ACCOUNT,
)

if TYPE_CHECKING:
    import asyncpg

TRIAL_CREDITS, TRIAL_DAYS = 28, 7  # what ensure_account's INSERT would create (core/plans.py)
FAR_FUTURE = datetime.max


class RawError(Exception):
    pass


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def dumps(value: Any) -> str:
    return json.dumps(value)  # SQLAlchemy's JSON type serialises with json.dumps too


def allocate(grants: list[asyncpg.Record], amount: int) -> list[tuple[asyncpg.Record, int]]:
    """Soonest-expiring first, never-expiring last, trial/promo before paid, then oldest."""

    def key(g: asyncpg.Record) -> tuple[Any, ...]:
        expires = g["expires_at"]
        return (
            expires is None,
            expires.timestamp() if expires else 0.0,
            g["kind"] == "paid",
            g["created_at"],
            g["id"],
        )

    parts, left = [], amount
    for grant in sorted(grants, key=key):
        take = min(grant["remaining"] - grant["reserved"], left)
        if take <= 0:
            continue
        parts.append((grant, take))
        left -= take
        if left == 0:
            return parts
    raise RawError("grants do not cover the amount")


async def ensure_and_lock(
    conn: asyncpg.Connection, account_id: str, now: datetime
) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
    created = await conn.fetchval(
        INSERT_ACCOUNT,
        account_id,
        TRIAL_CREDITS,
        0,
        1,
        None,
        False,
        now + timedelta(days=TRIAL_DAYS),
        None,
        0,
        False,
        now,
        now,
    )
    if created is not None:
        raise RawError(f"the ceiling handles seeded accounts only; {account_id} was new")
    account = await conn.fetchrow(LOCK_ACCOUNT, account_id)
    grants = await conn.fetch(LIVE_GRANTS, account_id, 0)
    return account, grants


async def save_account(
    conn: asyncpg.Connection,
    account: asyncpg.Record,
    balance: int,
    held: int,
    seq: int,
    now: datetime,
) -> None:
    status = await conn.execute(
        UPDATE_ACCOUNT,
        account["id"],
        balance,
        held,
        seq,
        account["plan"],
        account["paid"],
        account["trial_expires_at"],
        account["trial_day"],
        account["trial_used"],
        account["low_notified"],
        now,
        account["id"],
        account["seq"],
    )
    if status != "UPDATE 1":
        raise RawError(f"account {account['id']} changed under its lock")


async def record(
    conn: asyncpg.Connection,
    account_id: str,
    seq: int,
    type_: str,
    amount: int,
    delta: int,
    held_delta: int,
    op_id: str,
    metadata: dict[str, Any],
    balance: int,
    held: int,
    now: datetime,
) -> dict[str, Any]:
    await conn.fetchval(
        INSERT_ENTRY,
        account_id,
        seq,
        type_,
        amount,
        delta,
        held_delta,
        type_,
        None,
        op_id,
        None,
        dumps(metadata),
        now,
    )
    event = {
        "type": "balance.updated",
        "account_id": account_id,
        "seq": seq,
        "balance": balance,
        "held": held,
        "available": balance - held,
        "delta": delta,
        "reason": type_,
        "ref": None,
        "at": iso(now),
    }
    await conn.execute(INSERT_EVENT, account_id, seq, "balance.updated", dumps(event), now)
    return event


def snapshot(account: asyncpg.Record, balance: int, held: int, seq: int) -> dict[str, Any]:
    return {
        "account_id": account["id"],
        "balance": balance,
        "held": held,
        "available": balance - held,
        "plan": account["plan"],
        "trial": {
            "active": False,
            "expires_at": iso(account["trial_expires_at"]),
            "daily_limit": 4,
            "spent_today": 0,
        },
        "seq": seq,
        "created_at": iso(account["created_at"]),
    }
