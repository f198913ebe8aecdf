"""The ceiling: a hold and a capture written by hand on asyncpg.

The statements are the ones the repositories (storage/*_repository.py) make SQLAlchemy issue for
`CreditService.hold` and `.capture` (captured once with `sqlalchemy.engine` logging), in the same
order, one round trip each, inside one transaction:

  hold:    INSERT accounts … ON CONFLICT DO NOTHING  (ensure_account)
           SELECT accounts … FOR UPDATE, SELECT live grants
           INSERT holds, UPDATE accounts (guarded by seq), UPDATE grants,
           INSERT entries … RETURNING id, INSERT events
  capture: SELECT holds, INSERT accounts … ON CONFLICT DO NOTHING,
           SELECT accounts … FOR UPDATE, SELECT live grants, SELECT holds (re-read under the lock),
           UPDATE holds (guarded by status), UPDATE accounts, UPDATE grants,
           INSERT entries … RETURNING id, INSERT events

What the ceiling leaves out is everything between the statements: SQLAlchemy's compilation and
result processing, the pool's pre-ping (one more round trip per transaction), the domain objects.
It handles only what the benchmarks send (paid accounts with never-expiring grants), and writes
the same rows, so `creditstream audit` passes on its ledger too. Only asyncpg and the standard
library are imported: the bare HTTP endpoint serves this module.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncpg

ACCOUNT_COLUMNS = (
    "accounts.id, accounts.balance, accounts.held, accounts.seq, accounts.plan, "
    "accounts.paid, accounts.trial_expires_at, accounts.trial_day, "
    "accounts.trial_used, accounts.low_notified, accounts.created_at, "
    "accounts.updated_at"
)
GRANT_COLUMNS = (
    "grants.id, grants.account_id, grants.amount, grants.remaining, grants.reserved, "
    "grants.reason, grants.kind, grants.ref, grants.expires_at, grants.created_at"
)
HOLD_COLUMNS = (
    "holds.id, holds.account_id, holds.amount, holds.status, holds.ref, "
    "holds.captured_amount, holds.release_reason, holds.job_id, holds.funding, "
    "holds.allocation, holds.metadata, holds.created_at, holds.expires_at, "
    "holds.closed_at"
)
TS = "TIMESTAMP WITH TIME ZONE"

INSERT_ACCOUNT = (
    "INSERT INTO accounts (id, balance, held, seq, plan, paid, trial_expires_at, trial_day, "
    "trial_used, low_notified, created_at, updated_at) VALUES ($1::VARCHAR, $2::BIGINT, "
    f"$3::BIGINT, $4::BIGINT, $5::VARCHAR, $6::BOOLEAN, $7::{TS}, $8::VARCHAR, $9::BIGINT, "
    f"$10::BOOLEAN, $11::{TS}, $12::{TS}) ON CONFLICT (id) DO NOTHING RETURNING accounts.id"
)
LOCK_ACCOUNT = (
    f"SELECT {ACCOUNT_COLUMNS} \nFROM accounts \nWHERE accounts.id = $1::VARCHAR FOR UPDATE"
)
LIVE_GRANTS = (
    f"SELECT {GRANT_COLUMNS} \nFROM grants \n"
    "WHERE grants.account_id = $1::VARCHAR AND grants.remaining > $2::BIGINT"
)
SELECT_HOLD = f"SELECT {HOLD_COLUMNS} \nFROM holds \nWHERE holds.id = $1::VARCHAR"
INSERT_HOLD = (
    "INSERT INTO holds (id, account_id, amount, status, ref, captured_amount, release_reason, "
    "job_id, funding, allocation, metadata, created_at, expires_at, closed_at) VALUES "
    "($1::VARCHAR, $2::VARCHAR, $3::BIGINT, $4::VARCHAR, $5::VARCHAR, $6::BIGINT, $7::VARCHAR, "
    f"$8::VARCHAR, $9::JSON, $10::JSON, $11::JSON, $12::{TS}, $13::{TS}, $14::{TS})"
)
UPDATE_HOLD = (
    "UPDATE holds SET id=$1::VARCHAR, account_id=$2::VARCHAR, amount=$3::BIGINT, "
    "status=$4::VARCHAR, ref=$5::VARCHAR, captured_amount=$6::BIGINT, release_reason=$7::VARCHAR, "
    "job_id=$8::VARCHAR, funding=$9::JSON, allocation=$10::JSON, metadata=$11::JSON, "
    f"created_at=$12::{TS}, expires_at=$13::{TS}, closed_at=$14::{TS} "
    "WHERE holds.id = $15::VARCHAR AND holds.status = $16::VARCHAR"
)
UPDATE_ACCOUNT = (
    "UPDATE accounts SET id=$1::VARCHAR, balance=$2::BIGINT, held=$3::BIGINT, seq=$4::BIGINT, "
    f"plan=$5::VARCHAR, paid=$6::BOOLEAN, trial_expires_at=$7::{TS}, trial_day=$8::VARCHAR, "
    f"trial_used=$9::BIGINT, low_notified=$10::BOOLEAN, updated_at=$11::{TS} "
    "WHERE accounts.id = $12::VARCHAR AND accounts.seq = $13::BIGINT"
)
UPDATE_GRANT = (
    "UPDATE grants SET remaining=$1::BIGINT, reserved=$2::BIGINT WHERE grants.id = $3::VARCHAR"
)
INSERT_ENTRY = (
    "INSERT INTO entries (account_id, seq, type, amount, delta, held_delta, reason, ref, op_id, "
    "idempotency_key, metadata, created_at) VALUES ($1::VARCHAR, $2::BIGINT, $3::VARCHAR, "
    "$4::BIGINT, $5::BIGINT, $6::BIGINT, $7::VARCHAR, $8::VARCHAR, $9::VARCHAR, $10::VARCHAR, "
    f"$11::JSON, $12::{TS}) RETURNING entries.id"
)
INSERT_EVENT = (
    "INSERT INTO events (account_id, seq, type, payload, created_at) VALUES "
    f"($1::VARCHAR, $2::BIGINT, $3::VARCHAR, $4::JSON, $5::{TS})"
)

TRIAL_CREDITS, TRIAL_DAYS = 28, 7  # what ensure_account's INSERT would create (core/plans.py)
FAR_FUTURE = datetime.max


class RawError(Exception):
    pass


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _dumps(value: Any) -> str:
    return json.dumps(value)  # SQLAlchemy's JSON type serialises with json.dumps too


def _allocate(grants: list[asyncpg.Record], amount: int) -> list[tuple[asyncpg.Record, int]]:
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


async def _ensure_and_lock(
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


async def _save_account(
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


async def _record(
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
        _dumps(metadata),
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
        "at": _iso(now),
    }
    await conn.execute(INSERT_EVENT, account_id, seq, "balance.updated", _dumps(event), now)
    return event


def _snapshot(account: asyncpg.Record, balance: int, held: int, seq: int) -> dict[str, Any]:
    return {
        "account_id": account["id"],
        "balance": balance,
        "held": held,
        "available": balance - held,
        "plan": account["plan"],
        "trial": {
            "active": False,
            "expires_at": _iso(account["trial_expires_at"]),
            "daily_limit": 4,
            "spent_today": 0,
        },
        "seq": seq,
        "created_at": _iso(account["created_at"]),
    }


async def hold(
    conn: asyncpg.Connection,
    account_id: str,
    amount: int,
    now: datetime,
    ttl: timedelta = timedelta(seconds=300),
) -> dict[str, Any]:
    """Open a hold; returns {"hold", "account", "event"} as the API would answer and publish."""
    async with conn.transaction():
        account, grants = await _ensure_and_lock(conn, account_id, now)
        if amount > account["balance"] - account["held"]:
            raise RawError("insufficient credits")
        parts = _allocate(grants, amount)
        hold_id = f"hold_{uuid.uuid4().hex}"
        allocation = [{"grant_id": g["id"], "kind": g["kind"], "amount": take} for g, take in parts]
        expires_at = now + ttl
        await conn.execute(
            INSERT_HOLD,
            hold_id,
            account_id,
            amount,
            "open",
            None,
            None,
            None,
            None,
            "[]",
            _dumps(allocation),
            "{}",
            now,
            expires_at,
            None,
        )
        balance, held, seq = account["balance"], account["held"] + amount, account["seq"] + 1
        await _save_account(conn, account, balance, held, seq, now)
        for grant, take in parts:
            await conn.execute(
                UPDATE_GRANT, grant["remaining"], grant["reserved"] + take, grant["id"]
            )
        event = await _record(
            conn, account_id, seq, "hold", amount, 0, amount, hold_id, {}, balance, held, now
        )
    hold_dict = {
        "hold_id": hold_id,
        "account_id": account_id,
        "amount": amount,
        "status": "open",
        "ref": None,
        "captured_amount": None,
        "release_reason": None,
        "funding": [],
        "allocation": allocation,
        "metadata": {},
        "job_id": None,
        "created_at": _iso(now),
        "expires_at": _iso(expires_at),
        "closed_at": None,
    }
    return {"hold": hold_dict, "account": _snapshot(account, balance, held, seq), "event": event}


async def capture(conn: asyncpg.Connection, hold_id: str, now: datetime) -> dict[str, Any]:
    """Capture an open hold in full."""
    async with conn.transaction():
        found = await conn.fetchrow(SELECT_HOLD, hold_id)
        if found is None:
            raise RawError(f"no hold {hold_id}")
        account, grants = await _ensure_and_lock(conn, found["account_id"], now)
        row = await conn.fetchrow(SELECT_HOLD, hold_id)  # re-read under the account lock
        if row is None or row["status"] != "open":
            raise RawError(f"hold {hold_id} is not open")
        amount = take = row["amount"]
        by_id = {g["id"]: g for g in grants}
        funding, updates, consume = [], [], take
        for part in json.loads(row["allocation"]):
            grant = by_id[part["grant_id"]]
            used = min(part["amount"], consume)
            consume -= used
            updates.append(
                (grant["remaining"] - used, grant["reserved"] - part["amount"], grant["id"])
            )
            if used:
                funding.append({"grant_id": grant["id"], "kind": grant["kind"], "amount": used})
        funding_json = _dumps(funding)
        await conn.execute(
            UPDATE_HOLD,
            hold_id,
            row["account_id"],
            amount,
            "captured",
            row["ref"],
            take,
            None,
            row["job_id"],
            funding_json,
            row["allocation"],
            row["metadata"],
            row["created_at"],
            row["expires_at"],
            now,
            hold_id,
            "open",
        )
        balance, held = account["balance"] - take, account["held"] - amount
        seq = account["seq"] + 1
        await _save_account(conn, account, balance, held, seq, now)
        for update in updates:
            await conn.execute(UPDATE_GRANT, *update)
        event = await _record(
            conn,
            account["id"],
            seq,
            "capture",
            take,
            -take,
            -amount,
            hold_id,
            {"hold_id": hold_id, "released": 0, "funding": funding},
            balance,
            held,
            now,
        )
    return {"account": _snapshot(account, balance, held, seq), "event": event}


# One statement, one round trip, committed on its own: the same rows as `hold` (for a paid
# account whose first grant covers the amount), for `bench push`'s writer, whose commits must
# cost the machine as little as possible so the servers under test get the CPU.
HOLD_IN_ONE_STATEMENT = f"""
WITH account AS (
    SELECT id, balance, held, seq FROM accounts WHERE id = $1::VARCHAR FOR UPDATE
), grant_row AS (
    SELECT id, kind FROM grants
    WHERE account_id = $1::VARCHAR AND remaining - reserved >= $2::BIGINT
    ORDER BY created_at, id LIMIT 1 FOR UPDATE
), saved AS (
    UPDATE accounts SET held = accounts.held + $2::BIGINT, seq = accounts.seq + 1,
                        updated_at = $3::{TS}
    FROM account, grant_row WHERE accounts.id = account.id
    RETURNING accounts.balance, accounts.held, accounts.seq
), reserved AS (
    UPDATE grants SET reserved = grants.reserved + $2::BIGINT
    FROM grant_row WHERE grants.id = grant_row.id RETURNING grants.id
), hold AS (
    INSERT INTO holds (id, account_id, amount, status, funding, allocation, metadata,
                       created_at, expires_at)
    SELECT $4::VARCHAR, $1::VARCHAR, $2::BIGINT, 'open', '[]'::JSON,
           json_build_array(json_build_object('grant_id', grant_row.id, 'kind', grant_row.kind,
                                              'amount', $2::BIGINT)),
           '{{}}'::JSON, $3::{TS}, $5::{TS}
    FROM grant_row
), entry AS (
    INSERT INTO entries (account_id, seq, type, amount, delta, held_delta, reason, op_id,
                         metadata, created_at)
    SELECT $1::VARCHAR, saved.seq, 'hold', $2::BIGINT, 0, $2::BIGINT, 'hold', $4::VARCHAR,
           '{{}}'::JSON, $3::{TS}
    FROM saved
), event AS (
    INSERT INTO events (account_id, seq, type, payload, created_at)
    SELECT $1::VARCHAR, saved.seq, 'balance.updated',
           json_build_object('type', 'balance.updated', 'account_id', $1::VARCHAR,
                             'seq', saved.seq, 'balance', saved.balance, 'held', saved.held,
                             'available', saved.balance - saved.held, 'delta', 0,
                             'reason', 'hold', 'ref', NULL, 'at', $6::VARCHAR),
           $3::{TS}
    FROM saved
)
SELECT balance, held, seq FROM saved
"""


async def hold_in_one_statement(
    conn: asyncpg.Connection,
    account_id: str,
    amount: int,
    now: datetime,
    ttl: timedelta = timedelta(seconds=300),
) -> dict[str, Any]:
    """A hold in one round trip; returns the committed event."""
    at = _iso(now)
    row = await conn.fetchrow(
        HOLD_IN_ONE_STATEMENT, account_id, amount, now, f"hold_{uuid.uuid4().hex}", now + ttl, at
    )
    if row is None:
        raise RawError(f"no account {account_id} with {amount} free credits")
    balance, held = row["balance"], row["held"]
    return {
        "type": "balance.updated",
        "account_id": account_id,
        "seq": row["seq"],
        "balance": balance,
        "held": held,
        "available": balance - held,
        "delta": 0,
        "reason": "hold",
        "ref": None,
        "at": at,
    }
