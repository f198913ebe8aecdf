"""An endpoint's backlog: the accounts past its cursors, its rescan mark, the events to send."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from storage.sql import Database
from storage.tables import accounts, events
from storage.tables import webhook_cursors as cursors
from storage.tables import webhook_endpoints as endpoints

# A cursor is the last seq of an account's stream handled for an endpoint. An account is pending
# for an endpoint while its head (`accounts.seq`, written in the transaction that wrote its events)
# is past the cursor, so a late commit is never skipped, whatever order accounts commit in.

IN_CHUNK = 500  # account ids per IN (…)


@dataclass(frozen=True)
class Pending:
    """An account with events past an endpoint's cursor."""

    account_id: str
    after: int
    first_at: datetime | None  # when the first of them was written
    generation: int = 0  # the cursor's, as read: `record` moves it only while unchanged


@dataclass(frozen=True)
class Journaled:
    """An event of the journal, as a delivery sends it."""

    seq: int
    type: str
    payload: dict[str, Any]
    created_at: datetime


class WebhookBacklog:
    """Part of `WebhookDeliveries`: reading what each endpoint has still to be sent."""

    db: Database

    async def pending(
        self, endpoint_id: str, limit: int, among: list[str] | None = None
    ) -> list[Pending]:
        """Accounts whose head is past the endpoint's cursor, with the cursor (0: none yet,
        an account created after the endpoint) and when the first event past it was written
        (the delivery lag). `among`: only these accounts."""
        if among is not None and not among:
            return []
        condition = sa.and_(
            cursors.c.endpoint_id == endpoint_id, cursors.c.account_id == accounts.c.id
        )
        position = sa.func.coalesce(cursors.c.seq, 0)
        generation = sa.func.coalesce(cursors.c.generation, 0)
        first_at = (
            sa.select(sa.func.min(events.c.created_at))
            .where(events.c.account_id == accounts.c.id, events.c.seq == position + 1)
            .scalar_subquery()
        )
        query = (
            sa.select(
                accounts.c.id,
                position.label("after"),
                first_at.label("first_at"),
                generation.label("generation"),
            )
            .select_from(accounts.outerjoin(cursors, condition))
            .where(accounts.c.seq > position)
            .order_by(accounts.c.id)
        )
        found: list[Pending] = []
        async with self.db.read() as uow:
            for chunk in _chunks(among):
                narrowed = query if chunk is None else query.where(accounts.c.id.in_(chunk))
                rows = await uow.conn.execute(narrowed.limit(limit - len(found)))
                found += [
                    Pending(row.id, int(row.after), as_utc(row.first_at), int(row.generation))
                    for row in rows
                ]
                if len(found) >= limit:
                    break
        return found

    async def rescans(self, endpoint_id: str) -> int | None:
        """The endpoint's rescan mark (bumped by a resend or an enable); None when it is gone."""
        async with self.db.read(snapshot=False) as uow:
            mark = (
                await uow.conn.execute(
                    sa.select(endpoints.c.rescans).where(endpoints.c.id == endpoint_id)
                )
            ).scalar()
            return None if mark is None else int(mark)

    async def moved_since(self, since: datetime) -> list[str]:
        """Accounts with an event created at or after `since` (a range of the created_at index)."""
        async with self.db.read(snapshot=False) as uow:
            rows = await uow.conn.execute(
                sa.select(events.c.account_id).where(events.c.created_at >= since).distinct()
            )
            return [row.account_id for row in rows]

    async def events_for(
        self, cursors_of: list[tuple[str, int]], per_account: int, limit: int
    ) -> dict[str, list[Journaled]]:
        """Per account, its first events past its cursor (at most `per_account` each, `limit`
        in all), in seq order: one query for a whole pass."""
        found: dict[str, list[Journaled]] = {}
        for start in range(0, len(cursors_of), IN_CHUNK):
            chunk = cursors_of[start : start + IN_CHUNK]
            past = sa.or_(
                *(
                    sa.and_(events.c.account_id == account_id, events.c.seq > after)
                    for account_id, after in chunk
                )
            )
            rank = (
                sa.func.row_number()
                .over(partition_by=events.c.account_id, order_by=events.c.seq)
                .label("rank")
            )
            ranked = (
                sa.select(
                    events.c.account_id,
                    events.c.seq,
                    events.c.type,
                    events.c.payload,
                    events.c.created_at,
                    rank,
                )
                .where(past)
                .subquery()
            )
            query = (
                sa.select(ranked)
                .where(ranked.c.rank <= per_account)
                .order_by(ranked.c.account_id, ranked.c.seq)
                .limit(limit - sum(len(v) for v in found.values()))
            )
            async with self.db.read(snapshot=False) as uow:
                for row in await uow.conn.execute(query):
                    found.setdefault(row.account_id, []).append(
                        Journaled(
                            int(row.seq),
                            row.type,
                            dict(row.payload),
                            as_utc(row.created_at) or row.created_at,
                        )
                    )
            if sum(len(v) for v in found.values()) >= limit:
                break
        return found


def _chunks(among: list[str] | None) -> list[list[str] | None]:
    if among is None:
        return [None]
    return [among[i : i + IN_CHUNK] for i in range(0, len(among), IN_CHUNK)]


def as_utc(stamp: datetime | None) -> datetime | None:
    if stamp is None or stamp.tzinfo is not None:
        return stamp
    return stamp.replace(tzinfo=UTC)
