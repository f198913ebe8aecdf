"""Resending webhook events: an endpoint's cursor for an account moved back (`rewind`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from storage.dialects import storable_key
from storage.sql import Database
from storage.tables import accounts, events
from storage.tables import webhook_cursors as cursors
from storage.tables import webhook_endpoints as endpoints
from storage.webhook_endpoint_record import Endpoint


@dataclass(frozen=True)
class Rewound:
    """A resend's answer: the account's head, and how many of its events from `from_seq` the
    endpoint takes (what will be delivered again). `moved`: False when nothing was written
    (`from_seq` past the head)."""

    head: int
    events: int
    moved: bool


class WebhookResends:
    """Part of `WebhookEndpoints`: moving an endpoint's cursor back for a resend."""

    db: Database

    async def rewind(self, endpoint: Endpoint, account_id: str, from_seq: int) -> Rewound | None:
        """Move the endpoint's cursor for the account back to `from_seq - 1` (never forward),
        so its events from `from_seq` are delivered again. The cursor's generation is bumped
        (a pass in flight that read it before does not move it forward again) and so is the
        endpoint's rescan mark (passes look at every account, not only those with new events).
        None: no such account (or endpoint, deleted meanwhile); nothing is written when
        `from_seq` is past the account's head."""
        if not storable_key(account_id):
            return None
        async with self.db.transaction() as uow:
            conn = uow.conn
            locked = (
                await conn.execute(
                    sa.select(endpoints.c.id)
                    .where(endpoints.c.id == endpoint.endpoint_id)
                    .with_for_update()
                )
            ).first()  # `delete` and `record` wait for this commit, and the other way round
            head = (
                await conn.execute(sa.select(accounts.c.seq).where(accounts.c.id == account_id))
            ).scalar()
            if locked is None or head is None:
                return None
            if from_seq > head:
                return Rewound(int(head), 0, False)
            count = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(events)
                    .where(
                        events.c.account_id == account_id,
                        events.c.seq >= from_seq,
                        events.c.type.in_(endpoint.events),
                    )
                )
            ).scalar_one()
            await self._move_back(conn, endpoint.endpoint_id, account_id, from_seq - 1)
            await conn.execute(
                sa.update(endpoints)
                .where(endpoints.c.id == endpoint.endpoint_id)
                .values(rescans=endpoints.c.rescans + 1)
            )
            return Rewound(int(head), int(count), True)

    @staticmethod
    async def _move_back(conn: Any, endpoint_id: str, account_id: str, seq: int) -> None:
        where = sa.and_(cursors.c.endpoint_id == endpoint_id, cursors.c.account_id == account_id)
        moved = await conn.execute(
            sa.update(cursors)
            .where(where)
            .values(
                seq=sa.case((cursors.c.seq > seq, seq), else_=cursors.c.seq),
                generation=cursors.c.generation + 1,
            )
        )
        if not moved.rowcount:  # an account created after the endpoint: no cursor yet
            await conn.execute(
                sa.insert(cursors).values(
                    endpoint_id=endpoint_id, account_id=account_id, seq=seq, generation=1
                )
            )
