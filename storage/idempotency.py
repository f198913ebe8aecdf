"""Idempotency keys in SQL, safe across instances.

A request first claims its key in a short transaction of its own. Its effect then commits in the
same transaction as the stored response (`complete_in`), guarded by the claim's lock time, so a
crash between the two leaves no effect and a stale claim that a retry may take over.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from core.errors import RequestInProgress
from storage.repositories import dialect_insert
from storage.sql import Database
from storage.tables import idempotency_keys as keys

IN_PROGRESS = "in_progress"
DONE = "done"


@dataclass(frozen=True)
class Claim:
    outcome: str  # "new" | "replay" | "mismatch" | "busy"
    locked_at: datetime | None = None
    status: int | None = None
    body: Any = None


class IdempotencyStore:
    def __init__(self, db: Database, stale_after: timedelta = timedelta(seconds=15)) -> None:
        self.db = db
        self.stale_after = stale_after

    async def claim(self, scope: str, key: str, fingerprint: str, now: datetime) -> Claim:
        async with self.db.transaction() as uow:
            inserted = (await uow.conn.execute(
                dialect_insert(uow.conn, keys)
                .values(scope=scope, key=key, fingerprint=fingerprint, status=IN_PROGRESS,
                        created_at=now, locked_at=now)
                .on_conflict_do_nothing(index_elements=["scope", "key"])
                .returning(keys.c.key))).scalar_one_or_none()
            if inserted is not None:
                return Claim("new", locked_at=now)
            return await self._existing(uow.conn, scope, key, fingerprint, now)

    async def complete_in(self, conn: AsyncConnection, scope: str, key: str,
                          locked_at: datetime, status: int, body: Any) -> None:
        """Store the response inside the effect's own transaction."""
        result = await conn.execute(
            sa.update(keys)
            .where(keys.c.scope == scope, keys.c.key == key, keys.c.status == IN_PROGRESS,
                   keys.c.locked_at == locked_at)
            .values(status=DONE, response_status=status, response_body=json.dumps(body)))
        if result.rowcount != 1:
            raise RequestInProgress(f"Idempotency key {key!r} was taken over by a retry")

    async def complete(self, scope: str, key: str, locked_at: datetime, status: int,
                       body: Any) -> None:
        async with self.db.transaction() as uow:
            await self.complete_in(uow.conn, scope, key, locked_at, status, body)

    async def abandon(self, scope: str, key: str, locked_at: datetime) -> None:
        async with self.db.transaction() as uow:
            await uow.conn.execute(sa.delete(keys).where(
                keys.c.scope == scope, keys.c.key == key, keys.c.status == IN_PROGRESS,
                keys.c.locked_at == locked_at))

    async def purge(self, older_than: datetime) -> int:
        async with self.db.transaction() as uow:
            result = await uow.conn.execute(sa.delete(keys).where(keys.c.created_at < older_than))
            return int(result.rowcount or 0)

    async def _existing(self, conn: AsyncConnection, scope: str, key: str, fingerprint: str,
                        now: datetime) -> Claim:
        row = (await conn.execute(
            sa.select(keys).where(keys.c.scope == scope, keys.c.key == key).with_for_update()
        )).one()
        if row.fingerprint != fingerprint:
            return Claim("mismatch")
        if row.status == DONE:
            return Claim("replay", status=row.response_status, body=json.loads(row.response_body))
        if row.locked_at > now - self.stale_after:
            return Claim("busy")
        # the first attempt died without committing anything: this retry takes the key over
        await conn.execute(sa.update(keys).where(keys.c.scope == scope, keys.c.key == key)
                           .values(locked_at=now))
        return Claim("new", locked_at=now)
