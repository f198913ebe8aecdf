"""Webhook endpoint leases: the endpoints due, each delivered to by one instance at a time."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from storage.sql import Database
from storage.tables import webhook_endpoints as endpoints
from storage.webhook_endpoint_record import ENABLED, Endpoint, endpoint_from_row


class WebhookLeases:
    """Part of `WebhookDeliveries`: taking, renewing and releasing an endpoint's lease."""

    db: Database

    async def due(self, now: datetime, limit: int, owner: str | None = None) -> list[str]:
        """Enabled endpoints no other instance holds and no backoff holds back."""
        async with self.db.read(snapshot=False) as uow:
            rows = await uow.conn.execute(
                sa.select(endpoints.c.id)
                .where(_leasable(now, owner))
                .order_by(endpoints.c.id)
                .limit(limit)
            )
            return [row.id for row in rows]

    async def acquire(
        self, endpoint_id: str, owner: str, now: datetime, until: datetime
    ) -> Endpoint | None:
        """Take the endpoint's lease, or None when another instance holds it (or it is not
        due). One conditional UPDATE: on PostgreSQL a second taker waits on the row lock and
        then finds the condition false; SQLite runs writers one at a time. The caller runs at
        most one worker per endpoint, so taking back its own lease is safe."""
        async with self.db.transaction() as uow:
            taken = await uow.conn.execute(
                sa.update(endpoints)
                .where(endpoints.c.id == endpoint_id, _leasable(now, owner))
                .values(lease_owner=owner, lease_until=until)
            )
            if not taken.rowcount:
                return None
            row = (
                await uow.conn.execute(sa.select(endpoints).where(endpoints.c.id == endpoint_id))
            ).one()
            return endpoint_from_row(row)

    async def renew(self, endpoint_id: str, owner: str, now: datetime, until: datetime) -> bool:
        """Extend a lease still held; False when it has lapsed (or the endpoint is gone)."""
        async with self.db.transaction() as uow:
            renewed = await uow.conn.execute(
                sa.update(endpoints)
                .where(
                    endpoints.c.id == endpoint_id,
                    endpoints.c.lease_owner == owner,
                    endpoints.c.lease_until > now,
                    endpoints.c.status == ENABLED,
                )
                .values(lease_until=until)
            )
            return bool(renewed.rowcount)

    async def release(self, endpoint_id: str, owner: str) -> None:
        async with self.db.transaction() as uow:
            await uow.conn.execute(
                sa.update(endpoints)
                .where(endpoints.c.id == endpoint_id, endpoints.c.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )


def _leasable(now: datetime, owner: str | None = None) -> sa.ColumnElement[bool]:
    """Enabled, due, and leased by nobody (or by `owner` itself: its worker ended without
    releasing the lease because the database was gone, e.g. mid-failover, and must not wait
    for the lease to lapse before delivering again)."""
    free = sa.or_(endpoints.c.lease_until.is_(None), endpoints.c.lease_until <= now)
    return sa.and_(
        endpoints.c.status == ENABLED,
        free if owner is None else sa.or_(free, endpoints.c.lease_owner == owner),
        sa.or_(endpoints.c.next_attempt_at.is_(None), endpoints.c.next_attempt_at <= now),
    )
