"""Idempotency keys in SQL, safe across instances, in the same transaction as the effect.

A batch claims its keys first, with one INSERT … ON CONFLICT DO NOTHING in key order: a key that
another transaction is claiming right now makes this INSERT wait for that transaction to end, so
two instances never run the same key's effect. The response is written before the same commit, so
a crash leaves neither the effect nor the key, and a retry runs as if for the first time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storage import pg_arrays
from storage.repositories import dialect_insert
from storage.sql import Database
from storage.tables import idempotency_keys as keys

IN_PROGRESS = "in_progress"
DONE = "done"

KeyId = tuple[str, str]  # (scope, key)

# PostgreSQL: the batch's keys as arrays, one statement each way
CLAIM_SQL = (
    "INSERT INTO idempotency_keys (scope, key, fingerprint, status, created_at, locked_at) "
    "SELECT k.scope, k.key, k.fingerprint, $4, $5, $5 FROM unnest($1::text[], $2::text[], "
    "$3::text[]) WITH ORDINALITY AS k(scope, key, fingerprint, n) ORDER BY k.n "
    "ON CONFLICT (scope, key) DO NOTHING RETURNING scope, key")
RECORD_SQL = (
    "UPDATE idempotency_keys SET status = $3, response_status = r.status, "
    "response_body = r.body FROM unnest($1::text[], $2::text[], $4::int[], $5::text[]) "
    "AS r(scope, key, status, body) "
    "WHERE idempotency_keys.scope = r.scope AND idempotency_keys.key = r.key")


@dataclass(frozen=True)
class IdempotencyKey:
    scope: str  # whose key it is: a server key's id or a user's account
    key: str
    fingerprint: str  # the request it was first used with

    @property
    def id(self) -> KeyId:
        return (self.scope, self.key)


@dataclass(frozen=True)
class StoredResponse:
    fingerprint: str
    status: int | None  # None: claimed by an earlier version's request that is still running
    body: Any


async def claim(conn: AsyncConnection, wanted: Iterable[IdempotencyKey],
                now: datetime) -> dict[KeyId, StoredResponse | None]:
    """Claim each key in this transaction: None for a key now ours, else what it answered."""
    by_id: dict[KeyId, IdempotencyKey] = {}
    for k in wanted:
        by_id.setdefault(k.id, k)  # a key twice in one batch: the first request owns it
    if not by_id:
        return {}
    ordered = [by_id[i] for i in sorted(by_id)]  # one lock order everywhere: no deadlocks
    claimed: dict[KeyId, StoredResponse | None] = {
        key_id: None for key_id in await _insert_claims(conn, ordered, now)}
    taken = [i for i in by_id if i not in claimed]
    if taken:
        rows = await conn.execute(sa.select(keys).where(
            sa.tuple_(keys.c.scope, keys.c.key).in_(taken)))
        for row in rows:
            done = row.status == DONE
            claimed[(row.scope, row.key)] = StoredResponse(
                row.fingerprint, row.response_status if done else None,
                json.loads(row.response_body) if done else None)
    return claimed


async def _insert_claims(conn: AsyncConnection, ordered: list[IdempotencyKey],
                         now: datetime) -> list[KeyId]:
    """INSERT … ON CONFLICT DO NOTHING, in the given order; returns the keys inserted."""
    if conn.dialect.name == "postgresql":
        rows = await pg_arrays.fetch(conn, CLAIM_SQL, [k.scope for k in ordered],
                                     [k.key for k in ordered], [k.fingerprint for k in ordered],
                                     IN_PROGRESS, now)
        return [(r["scope"], r["key"]) for r in rows]
    inserted = await conn.execute(
        dialect_insert(conn, keys)
        .values([{"scope": k.scope, "key": k.key, "fingerprint": k.fingerprint,
                  "status": IN_PROGRESS, "created_at": now, "locked_at": now} for k in ordered])
        .on_conflict_do_nothing(index_elements=["scope", "key"])
        .returning(keys.c.scope, keys.c.key))
    return [(r.scope, r.key) for r in inserted]


async def record(conn: AsyncConnection, responses: dict[KeyId, tuple[int, Any]]) -> None:
    """Store each claimed key's response, before the commit that makes its effect durable."""
    if not responses:
        return
    if conn.dialect.name == "postgresql":
        await pg_arrays.fetch(conn, RECORD_SQL, [s for s, _ in responses],
                              [k for _, k in responses], DONE,
                              [status for status, _ in responses.values()],
                              [json.dumps(body) for _, body in responses.values()])
        return
    await conn.execute(
        sa.update(keys).where(keys.c.scope == sa.bindparam("k_scope"),
                              keys.c.key == sa.bindparam("k_key")),
        [{"k_scope": scope, "k_key": key, "status": DONE, "response_status": status,
          "response_body": json.dumps(body)} for (scope, key), (status, body) in
         responses.items()])


async def unclaim(conn: AsyncConnection, released: Iterable[KeyId]) -> None:
    """Give back the keys of operations that failed unexpectedly: a retry may run them again."""
    for scope, key in released:
        await conn.execute(sa.delete(keys).where(keys.c.scope == scope, keys.c.key == key))


class IdempotencyStore:
    """What outlives a request: forgetting keys past their retention."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def purge(self, older_than: datetime) -> int:
        async with self.db.transaction() as uow:
            result = await uow.conn.execute(sa.delete(keys).where(keys.c.created_at < older_than))
            return int(result.rowcount or 0)
