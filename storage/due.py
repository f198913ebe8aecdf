"""What the sweeper finds due: open holds and processing jobs past `expires_at`, oldest first,
each with its account (so its expiry goes to that account's write lane and is locked with it in
the batch's one `SELECT … FOR UPDATE`), and the accounts of the oldest grants past theirs. Each
query is a range scan of a partial index on `expires_at` of the open holds, the processing jobs
or the grants with credits left (`ix_grants_due`).

Every instance sweeps every second, and almost always finds nothing; on PostgreSQL the three
reads are prepared statements straight on asyncpg, one statement each with no transaction
around it (one round trip instead of BEGIN, the query and ROLLBACK). Through SQLAlchemy each
read built its statement, its cache key and its result's rows: work, and garbage, that the
event loop of a streaming instance paid for between two events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.tables import OPEN_HOLD, PROCESSING_JOB, holds, jobs

if TYPE_CHECKING:
    from storage.sql import Database

DUE_HOLDS = (
    f"SELECT id, account_id, expires_at FROM holds WHERE {OPEN_HOLD} AND expires_at <= $1 "
    "ORDER BY expires_at LIMIT $2"
)
DUE_JOBS = (
    f"SELECT id, account_id, expires_at, hold_id FROM jobs WHERE {PROCESSING_JOB} "
    "AND expires_at <= $1 ORDER BY expires_at LIMIT $2"
)
DUE_GRANT_ACCOUNTS = (
    "SELECT DISTINCT account_id FROM (SELECT account_id FROM grants WHERE expires_at <= $1 "
    "AND remaining > 0 AND remaining > reserved ORDER BY expires_at LIMIT $2) AS oldest"
)


@dataclass(frozen=True)
class Due:
    """A hold or job past its expiry; `hold_id` is a job's hold."""

    id: str
    account_id: str
    expires_at: datetime
    hold_id: str | None = None


async def holds_due(db: Database, now: datetime, limit: int) -> list[Due]:
    if db.dialect == "postgresql":
        async with db.driver() as driver:
            records = await driver.fetch(DUE_HOLDS, now, limit)
        return [Due(r[0], r[1], r[2]) for r in records]
    async with db.read() as uow:
        return await due_holds(uow.conn, now, limit)


async def jobs_due(db: Database, now: datetime, limit: int) -> list[Due]:
    if db.dialect == "postgresql":
        async with db.driver() as driver:
            records = await driver.fetch(DUE_JOBS, now, limit)
        return [Due(r[0], r[1], r[2], r[3]) for r in records]
    async with db.read() as uow:
        return await due_jobs(uow.conn, now, limit)


async def accounts_with_due_grants(db: Database, now: datetime, limit: int) -> list[str]:
    if db.dialect == "postgresql":
        async with db.driver() as driver:
            return [r[0] for r in await driver.fetch(DUE_GRANT_ACCOUNTS, now, limit)]
    async with db.read() as uow:
        return await uow.accounts.with_due_grants(now, limit)


async def due_holds(conn: AsyncConnection, now: datetime, limit: int) -> list[Due]:
    rows = await conn.execute(
        sa.select(holds.c.id, holds.c.account_id, holds.c.expires_at)
        .where(sa.text(OPEN_HOLD), holds.c.expires_at <= now)
        .order_by(holds.c.expires_at)
        .limit(limit)
    )
    return [Due(row.id, row.account_id, row.expires_at) for row in rows]


async def due_jobs(conn: AsyncConnection, now: datetime, limit: int) -> list[Due]:
    rows = await conn.execute(
        sa.select(jobs.c.id, jobs.c.account_id, jobs.c.expires_at, jobs.c.hold_id)
        .where(sa.text(PROCESSING_JOB), jobs.c.expires_at <= now)
        .order_by(jobs.c.expires_at)
        .limit(limit)
    )
    return [Due(row.id, row.account_id, row.expires_at, row.hold_id) for row in rows]
