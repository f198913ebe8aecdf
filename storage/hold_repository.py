"""The hold repository: holds in SQL, read, added and saved under their expected status."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from core.errors import ConcurrentUpdate
from core.model import Hold
from storage.dialects import storable_key
from storage.tables import holds

# the write methods are the per-operation reference path (storage/account_repository.py says why)


def hold_from_row(row: Any) -> Hold:
    return Hold(
        hold_id=row.id,
        account_id=row.account_id,
        amount=row.amount,
        status=row.status,
        created_at=row.created_at,
        expires_at=row.expires_at,
        ref=row.ref,
        captured_amount=row.captured_amount,
        release_reason=row.release_reason,
        closed_at=row.closed_at,
        job_id=row.job_id,
        funding=list(row.funding or []),
        allocation=list(row.allocation or []),
        metadata=dict(row.metadata or {}),
        price=dict(row.price or {}),
    )


class SqlHolds:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, hold: Hold) -> None:
        await self.conn.execute(sa.insert(holds).values(**self._row(hold)))

    async def get(self, hold_id: str) -> Hold | None:
        if not storable_key(hold_id):
            return None
        row = (await self.conn.execute(sa.select(holds).where(holds.c.id == hold_id))).one_or_none()
        return None if row is None else hold_from_row(row)

    async def save(self, hold: Hold, expected_status: str) -> None:
        result = await self.conn.execute(
            sa.update(holds)
            .where(holds.c.id == hold.hold_id, holds.c.status == expected_status)
            .values(**self._row(hold))
        )
        if result.rowcount != 1:
            raise ConcurrentUpdate(f"Hold {hold.hold_id} left {expected_status} under its lock")

    async def due(self, now: datetime, limit: int) -> list[str]:
        stmt = (
            sa.select(holds.c.id)
            .where(holds.c.status == Hold.OPEN, holds.c.expires_at <= now)
            .order_by(holds.c.expires_at)
            .limit(limit)
        )
        return list((await self.conn.execute(stmt)).scalars())

    @staticmethod
    def _row(hold: Hold) -> dict[str, Any]:
        return {
            "id": hold.hold_id,
            "account_id": hold.account_id,
            "amount": hold.amount,
            "status": hold.status,
            "ref": hold.ref,
            "captured_amount": hold.captured_amount,
            "release_reason": hold.release_reason,
            "job_id": hold.job_id,
            "funding": hold.funding,
            "allocation": hold.allocation,
            "metadata": hold.metadata,
            "price": hold.price,
            "created_at": hold.created_at,
            "expires_at": hold.expires_at,
            "closed_at": hold.closed_at,
        }
