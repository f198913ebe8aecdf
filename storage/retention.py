"""Forgetting what the product lets go, in bounded batches: stream events past the journal's
retention window (G5: at least 7 days; a subscriber resuming from before it gets a snapshot with
`reset: true`) and idempotency keys past theirs (kept at least 24 h).

Each batch is one short transaction deleting at most `batch` rows, oldest first, found through
the table's time index: `DELETE … WHERE (primary key) IN (SELECT … ORDER BY time LIMIT n)`, the
same statement on PostgreSQL and SQLite (idempotency keys pick their rows once and delete their
answers with them: storage/writes/idempotency.py). Short transactions keep row locks and WAL bursts small,
so writes and the sweeper's expiries go on between batches. Entries, holds, jobs, grants and
refunds are the ledger and are never pruned.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from storage.sql import Database
from storage.tables import events

MIN_EVENTS_RETENTION = timedelta(days=7)  # G5; CREDITSTREAM_EVENTS_RETENTION_DAYS may only add
PRUNE_BATCH = 5000  # rows per transaction: tens of milliseconds on PostgreSQL (docs/SCALING.md)
PRUNE_BATCHES_PER_PASS = 10  # a pass stops there; the sweeper's next pass goes on


async def delete_older_than(
    db: Database, table: sa.Table, created: sa.Column[datetime], before: datetime, limit: int
) -> int:
    """Delete up to `limit` rows of `table` whose `created` is before `before`, oldest first,
    in one transaction; returns how many went."""
    key = table.primary_key.columns
    # SKIP LOCKED (PostgreSQL; SQLite has one writer anyway): sweepers on several instances
    # delete disjoint batches instead of queueing behind each other's row locks
    oldest = (
        sa.select(*key)
        .where(created < before)
        .order_by(created)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    async with db.transaction() as uow:
        gone = await uow.conn.execute(sa.delete(table).where(sa.tuple_(*key).in_(oldest)))
        return int(gone.rowcount or 0)


@dataclass(frozen=True)
class PruneResult:
    deleted: int
    more: bool  # stopped at its batch budget with rows still due: go on at the next pass


async def in_batches(
    delete_batch: Callable[[int], Awaitable[int]],
    batch: int = PRUNE_BATCH,
    batches: int = PRUNE_BATCHES_PER_PASS,
) -> PruneResult:
    """Run `delete_batch(batch)` until one deletes fewer than `batch` rows, at most `batches`
    times."""
    deleted = 0
    for _ in range(batches):
        gone = await delete_batch(batch)
        deleted += gone
        if gone < batch:
            return PruneResult(deleted, more=False)
    return PruneResult(deleted, more=True)


class EventRetention:
    """The stream journal's window: events older than it are deleted; a subscriber resuming
    from before it gets a snapshot with `reset: true` (realtime/hub.py, the events route)."""

    def __init__(
        self,
        db: Database,
        window: timedelta,
        batch: int = PRUNE_BATCH,
        batches_per_pass: int = PRUNE_BATCHES_PER_PASS,
    ) -> None:
        self.db, self.window = db, window
        self.batch, self.batches_per_pass = batch, batches_per_pass

    async def prune(self, now: datetime) -> PruneResult:
        before = now - self.window
        return await in_batches(
            lambda limit: delete_older_than(self.db, events, events.c.created_at, before, limit),
            self.batch,
            self.batches_per_pass,
        )
