"""The hub's read side of the journal: events after a seq, current heads, snapshots."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import sqlalchemy as sa

from core.ports import Clock
from storage import journal_queries
from storage.account_repository import account_from_row
from storage.dialects import RecordColumns
from storage.sql import Database, SqlUnitOfWork
from storage.tables import accounts, events

HEADS_CHUNK = 1000
MOVED_SINCE = "SELECT account_id, max(seq) FROM events WHERE created_at >= $1 GROUP BY account_id"
SNAPSHOTS = f"SELECT {', '.join(accounts.c.keys())} FROM accounts WHERE id = ANY($1::text[])"


class SqlEventJournal:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def events_after(
        self, account_id: str, after_seq: int, limit: int
    ) -> list[dict[str, Any]]:
        return await self.db.standby_read(
            lambda uow: journal_queries.events_after(uow.conn, account_id, after_seq, limit)
        )

    async def heads(self, account_ids: list[str]) -> dict[str, int]:

        async def read(uow: SqlUnitOfWork) -> dict[str, int]:
            heads: dict[str, int] = {}
            for start in range(0, len(account_ids), HEADS_CHUNK):
                chunk = account_ids[start : start + HEADS_CHUNK]
                rows = await uow.conn.execute(
                    sa.select(accounts.c.id, accounts.c.seq).where(accounts.c.id.in_(chunk))
                )
                heads.update({row.id: int(row.seq) for row in rows})
            return heads

        return await self.db.standby_read(read)

    def now(self) -> datetime:
        """The clock the journal's `created_at` is written with."""
        return self.clock.now()

    async def moved_since(self, since: datetime) -> dict[str, int]:
        """The accounts with an event created at or after `since`, with their last seq: one range
        scan of `ix_events_created_at`, whatever the number of accounts subscribed to."""
        if self.db.dialect == "postgresql":  # every 0.5 s on every instance: straight on asyncpg
            async with self.db.driver() as driver:
                return {r[0]: int(r[1]) for r in await driver.fetch(MOVED_SINCE, since)}
        async with self.db.read() as uow:
            rows = await uow.conn.execute(
                sa.select(events.c.account_id, sa.func.max(events.c.seq))
                .where(events.c.created_at >= since)
                .group_by(events.c.account_id)
            )
            return {account_id: int(seq) for account_id, seq in rows}

    async def snapshots(self, account_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The state of each existing account (its snapshot, with its seq), many accounts per
        statement: on PostgreSQL one prepared `id = ANY($1)` whatever their number, straight
        on asyncpg (a subscribe storm runs thousands of them) and with no transaction."""
        now = self.clock.now()
        found: dict[str, dict[str, Any]] = {}
        if self.db.dialect == "postgresql":

            async def read(driver: asyncpg.Connection) -> dict[str, dict[str, Any]]:
                found.clear()  # a standby that failed halfway leaves its part to the primary
                for start in range(0, len(account_ids), HEADS_CHUNK):
                    records = await driver.fetch(
                        SNAPSHOTS, account_ids[start : start + HEADS_CHUNK]
                    )
                    found.update(
                        {r["id"]: account_from_row(RecordColumns(r)).snapshot(now) for r in records}
                    )
                return found

            return await self.db.standby_driver(read)
        async with self.db.read(snapshot=False) as uow:
            for start in range(0, len(account_ids), HEADS_CHUNK):
                chunk = account_ids[start : start + HEADS_CHUNK]
                rows = await uow.conn.execute(sa.select(accounts).where(accounts.c.id.in_(chunk)))
                found.update({row.id: account_from_row(row).snapshot(now) for row in rows})
        return found
