"""The batched ceiling of `bench engine` and `bench hot`: many holds in one transaction, set-based,
written by hand on asyncpg — what a group-committing engine could at best do with the same rows.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bench.rawsql_statements import TS
from bench.rawsql_steps import dumps, iso

if TYPE_CHECKING:
    import asyncpg


# Many holds in one transaction, set-based: the ceiling for a group-committing engine. The
# accounts are locked in one statement in id order (no deadlocks between batches), their grants
# read in one, and every row is written with one statement per table over arrays.
LOCK_ACCOUNTS = (
    "SELECT id, balance, held, seq FROM accounts WHERE id = ANY($1::VARCHAR[]) "
    "ORDER BY id FOR UPDATE"
)
GRANTS_OF = (
    "SELECT id, account_id, kind, remaining, reserved FROM grants "
    "WHERE account_id = ANY($1::VARCHAR[]) AND remaining > 0 ORDER BY created_at, id"
)
UPDATE_ACCOUNTS = (
    f"UPDATE accounts SET held = v.held, seq = v.seq, updated_at = $4::{TS} "
    "FROM unnest($1::VARCHAR[], $2::BIGINT[], $3::BIGINT[]) AS v(id, held, seq) "
    "WHERE accounts.id = v.id"
)
UPDATE_GRANTS = (
    "UPDATE grants SET reserved = v.reserved FROM unnest($1::VARCHAR[], "
    "$2::BIGINT[]) AS v(id, reserved) WHERE grants.id = v.id"
)
INSERT_HOLDS = (
    "INSERT INTO holds (id, account_id, amount, status, funding, allocation, metadata, "
    "created_at, expires_at) SELECT h.id, h.account_id, h.amount, 'open', '[]'::JSON, "
    f"h.allocation, '{{}}'::JSON, $5::{TS}, $6::{TS} FROM unnest($1::VARCHAR[], "
    "$2::VARCHAR[], $3::BIGINT[], $4::JSON[]) AS h(id, account_id, amount, allocation)"
)
INSERT_ENTRIES = (
    "INSERT INTO entries (account_id, seq, type, amount, delta, held_delta, reason, op_id, "
    f"metadata, created_at) SELECT e.account_id, e.seq, 'hold', e.amount, 0, e.amount, 'hold', "
    f"e.op_id, '{{}}'::JSON, $5::{TS} FROM unnest($1::VARCHAR[], $2::BIGINT[], $3::BIGINT[], "
    "$4::VARCHAR[]) AS e(account_id, seq, amount, op_id)"
)
INSERT_EVENTS = (
    "INSERT INTO events (account_id, seq, type, payload, created_at) SELECT e.account_id, e.seq, "
    f"'balance.updated', e.payload, $4::{TS} FROM unnest($1::VARCHAR[], $2::BIGINT[], "
    "$3::JSON[]) AS e(account_id, seq, payload)"
)


async def hold_batch(
    conn: asyncpg.Connection,
    account_ids: list[str],
    amount: int,
    now: datetime,
    ttl: timedelta = timedelta(seconds=300),
) -> int:
    """`len(account_ids)` holds of `amount` in one transaction; returns how many were opened."""
    at = iso(now)
    async with conn.transaction():
        locked = {r["id"]: dict(r) for r in await conn.fetch(LOCK_ACCOUNTS, account_ids)}
        grants: dict[str, list[dict[str, Any]]] = {}
        for g in await conn.fetch(GRANTS_OF, list(locked)):
            grants.setdefault(g["account_id"], []).append(dict(g))
        holds: list[tuple[str, str, int, str]] = []
        entries: list[tuple[str, int, int, str]] = []
        events: list[tuple[str, int, str]] = []
        touched: dict[str, dict[str, Any]] = {}
        for account_id in account_ids:
            account = locked.get(account_id)
            grant = next(
                (g for g in grants.get(account_id, ()) if g["remaining"] - g["reserved"] >= amount),
                None,
            )
            if account is None or grant is None:
                continue
            grant["reserved"] += amount
            touched[grant["id"]] = grant
            account["held"] += amount
            account["seq"] += 1
            hold_id = f"hold_{uuid.uuid4().hex}"
            holds.append(
                (
                    hold_id,
                    account_id,
                    amount,
                    dumps([{"grant_id": grant["id"], "kind": grant["kind"], "amount": amount}]),
                )
            )
            entries.append((account_id, account["seq"], amount, hold_id))
            events.append(
                (
                    account_id,
                    account["seq"],
                    dumps(
                        {
                            "type": "balance.updated",
                            "account_id": account_id,
                            "seq": account["seq"],
                            "balance": account["balance"],
                            "held": account["held"],
                            "available": account["balance"] - account["held"],
                            "delta": 0,
                            "reason": "hold",
                            "ref": None,
                            "at": at,
                        }
                    ),
                )
            )
        if not holds:
            return 0
        await conn.execute(
            UPDATE_ACCOUNTS,
            list(locked),
            [a["held"] for a in locked.values()],
            [a["seq"] for a in locked.values()],
            now,
        )
        await conn.execute(UPDATE_GRANTS, list(touched), [g["reserved"] for g in touched.values()])
        await conn.execute(INSERT_HOLDS, *map(list, zip(*holds, strict=True)), now, now + ttl)
        await conn.execute(INSERT_ENTRIES, *map(list, zip(*entries, strict=True)), now)
        await conn.execute(INSERT_EVENTS, *map(list, zip(*events, strict=True)), now)
    return len(holds)
