"""The reads only the operator console makes: an account's grants, open holds and refunds."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from core.model import Hold
from storage.account_repository import grant_from_row
from storage.hold_repository import hold_from_row
from storage.journal_queries import entry_to_dict
from storage.tables import entries, grants, holds


async def recent_grants(conn: AsyncConnection, account_id: str, limit: int) -> list[dict[str, Any]]:
    """The account's grants, newest first, spent ones too (remaining 0)."""
    rows = await conn.execute(
        sa.select(grants)
        .where(grants.c.account_id == account_id)
        .order_by(grants.c.created_at.desc(), grants.c.id.desc())
        .limit(limit)
    )
    return [grant_from_row(row).to_dict() for row in rows]


async def open_holds(conn: AsyncConnection, account_id: str, limit: int) -> list[dict[str, Any]]:
    rows = await conn.execute(
        sa.select(holds)
        .where(holds.c.account_id == account_id, holds.c.status == Hold.OPEN)
        .order_by(holds.c.created_at.desc())
        .limit(limit)
    )
    return [hold_from_row(row).to_dict() for row in rows]


async def entries_before(
    conn: AsyncConnection, account_id: str, before: int | None, limit: int
) -> list[dict[str, Any]]:
    """Journal lines newest first, older than entry `before` (None: from the newest)."""
    stmt = sa.select(entries).where(entries.c.account_id == account_id)
    if before is not None:
        stmt = stmt.where(entries.c.id < before)
    rows = await conn.execute(stmt.order_by(entries.c.id.desc()).limit(limit))
    return [entry_to_dict(row) for row in rows]


async def refund_entries(
    conn: AsyncConnection, account_id: str, limit: int
) -> list[dict[str, Any]]:
    """The account's refund journal lines, newest first."""
    rows = await conn.execute(
        sa.select(entries)
        .where(entries.c.account_id == account_id, entries.c.type == "refund")
        .order_by(entries.c.seq.desc())
        .limit(limit)
    )
    return [entry_to_dict(row) for row in rows]
