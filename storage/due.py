"""What the sweeper finds due: open holds and processing jobs past `expires_at`, oldest first,
each with its account (so its expiry goes to that account's write lane and is locked with it in
the batch's one `SELECT … FOR UPDATE`). Each query is a range scan of its (status, expires_at)
index."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from core.jobs import PROCESSING
from core.model import Hold
from storage.tables import holds, jobs


@dataclass(frozen=True)
class Due:
    """A hold or job past its expiry; `hold_id` is a job's hold."""

    id: str
    account_id: str
    expires_at: datetime
    hold_id: str | None = None


async def due_holds(conn: AsyncConnection, now: datetime, limit: int) -> list[Due]:
    rows = await conn.execute(
        sa.select(holds.c.id, holds.c.account_id, holds.c.expires_at)
        .where(holds.c.status == Hold.OPEN, holds.c.expires_at <= now)
        .order_by(holds.c.expires_at)
        .limit(limit)
    )
    return [Due(row.id, row.account_id, row.expires_at) for row in rows]


async def due_jobs(conn: AsyncConnection, now: datetime, limit: int) -> list[Due]:
    rows = await conn.execute(
        sa.select(jobs.c.id, jobs.c.account_id, jobs.c.expires_at, jobs.c.hold_id)
        .where(jobs.c.status == PROCESSING, jobs.c.expires_at <= now)
        .order_by(jobs.c.expires_at)
        .limit(limit)
    )
    return [Due(row.id, row.account_id, row.expires_at, row.hold_id) for row in rows]
