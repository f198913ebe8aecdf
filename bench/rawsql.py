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
the same rows, so `creditstream audit` passes on its ledger too. Only asyncpg, the standard
library and the ceiling's own modules are imported: the statements' text is in
bench/rawsql_statements.py, the steps a hold and a capture share in bench/rawsql_steps.py.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bench.rawsql_statements import (
    HOLD_IN_ONE_STATEMENT,
    INSERT_HOLD,
    SELECT_HOLD,
    UPDATE_GRANT,
    UPDATE_HOLD,
)
from bench.rawsql_steps import (
    RawError,
    allocate,
    dumps,
    ensure_and_lock,
    iso,
    record,
    save_account,
    snapshot,
)

if TYPE_CHECKING:
    import asyncpg


async def hold(
    conn: asyncpg.Connection,
    account_id: str,
    amount: int,
    now: datetime,
    ttl: timedelta = timedelta(seconds=300),
) -> dict[str, Any]:
    """Open a hold; returns {"hold", "account", "event"} as the API would answer and publish."""
    async with conn.transaction():
        account, grants = await ensure_and_lock(conn, account_id, now)
        if amount > account["balance"] - account["held"]:
            raise RawError("insufficient credits")
        parts = allocate(grants, amount)
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
            dumps(allocation),
            "{}",
            now,
            expires_at,
            None,
        )
        balance, held, seq = account["balance"], account["held"] + amount, account["seq"] + 1
        await save_account(conn, account, balance, held, seq, now)
        for grant, take in parts:
            await conn.execute(
                UPDATE_GRANT, grant["remaining"], grant["reserved"] + take, grant["id"]
            )
        event = await record(
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
        "created_at": iso(now),
        "expires_at": iso(expires_at),
        "closed_at": None,
    }
    return {"hold": hold_dict, "account": snapshot(account, balance, held, seq), "event": event}


async def capture(conn: asyncpg.Connection, hold_id: str, now: datetime) -> dict[str, Any]:
    """Capture an open hold in full."""
    async with conn.transaction():
        found = await conn.fetchrow(SELECT_HOLD, hold_id)
        if found is None:
            raise RawError(f"no hold {hold_id}")
        account, grants = await ensure_and_lock(conn, found["account_id"], now)
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
        funding_json = dumps(funding)
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
        await save_account(conn, account, balance, held, seq, now)
        for update in updates:
            await conn.execute(UPDATE_GRANT, *update)
        event = await record(
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
    return {"account": snapshot(account, balance, held, seq), "event": event}


async def hold_in_one_statement(
    conn: asyncpg.Connection,
    account_id: str,
    amount: int,
    now: datetime,
    ttl: timedelta = timedelta(seconds=300),
) -> dict[str, Any]:
    """A hold in one round trip; returns the committed event."""
    at = iso(now)
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
