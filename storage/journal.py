"""The hub's read side of the journal: events after a seq, current heads, snapshots."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from core.ports import Clock
from storage import queries
from storage.sql import Database
from storage.tables import accounts, events

HEADS_CHUNK = 1000


class SqlEventJournal:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def events_after(self, account_id: str, after_seq: int,
                           limit: int) -> list[dict[str, Any]]:
        async with self.db.read() as uow:
            return await queries.events_after(uow.conn, account_id, after_seq, limit)

    async def heads(self, account_ids: list[str]) -> dict[str, int]:
        heads: dict[str, int] = {}
        async with self.db.read() as uow:
            for start in range(0, len(account_ids), HEADS_CHUNK):
                chunk = account_ids[start:start + HEADS_CHUNK]
                rows = await uow.conn.execute(
                    sa.select(accounts.c.id, accounts.c.seq).where(accounts.c.id.in_(chunk)))
                heads.update({row.id: int(row.seq) for row in rows})
        return heads

    def now(self) -> datetime:
        """The clock the journal's `created_at` is written with."""
        return self.clock.now()

    async def moved_since(self, since: datetime) -> dict[str, int]:
        """The accounts with an event created at or after `since`, with their last seq: one range
        scan of `ix_events_created_at`, whatever the number of accounts subscribed to."""
        async with self.db.read() as uow:
            rows = await uow.conn.execute(
                sa.select(events.c.account_id, sa.func.max(events.c.seq))
                .where(events.c.created_at >= since).group_by(events.c.account_id))
            return {account_id: int(seq) for account_id, seq in rows}

    async def snapshot(self, account_id: str) -> dict[str, Any] | None:
        async with self.db.read() as uow:
            account = await uow.accounts.get(account_id)
        return None if account is None else account.snapshot(self.clock.now())
