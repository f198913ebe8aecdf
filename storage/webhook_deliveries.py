"""Delivering outbound webhooks in SQL: each endpoint's cursor per account, the attempts, and
the lease that lets one instance at a time deliver to an endpoint (the registry itself is
storage/webhook_endpoints.py).

A cursor is the last seq of an account's stream handled for an endpoint. An account is pending
for an endpoint while its head (`accounts.seq`, written in the transaction that wrote its events)
is past the cursor, so a late commit is never skipped, whatever order accounts commit in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.repositories import dialect_insert
from storage.sql import Database
from storage.tables import accounts, events
from storage.tables import webhook_cursors as cursors
from storage.tables import webhook_deliveries as deliveries
from storage.tables import webhook_endpoints as endpoints
from storage.webhook_endpoints import DISABLED, ENABLED, Endpoint, as_utc, endpoint_from_row

IN_CHUNK = 500  # account ids per IN (…)


@dataclass(frozen=True)
class Attempt:
    account_id: str
    seq: int
    event_type: str
    status_code: int | None
    error: str | None
    duration_ms: int
    at: datetime
    next_retry_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def row(self, endpoint_id: str) -> dict[str, Any]:
        return {
            "endpoint_id": endpoint_id,
            "account_id": self.account_id,
            "seq": self.seq,
            "event_type": self.event_type,
            "status_code": self.status_code,
            "error": self.error,
            "duration_ms": self.duration_ms,
            "attempted_at": self.at,
            "next_retry_at": self.next_retry_at,
        }


@dataclass(frozen=True)
class Outcome:
    """How a run of attempts leaves an endpoint: still failing (retry at `next_attempt_at`),
    disabled (`disabled_reason`), or healthy (neither)."""

    failing_since: datetime | None = None
    failures: int = 0
    next_attempt_at: datetime | None = None
    disabled_reason: str | None = None


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


class WebhookDeliveries:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- delivery: leases ----------------------------------------------------------------

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

    # --- delivery: the stream ------------------------------------------------------------

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

    async def record(
        self,
        endpoint_id: str,
        positions: dict[str, int],
        attempts: list[Attempt],
        outcome: Outcome,
        now: datetime,
        generations: dict[str, int] | None = None,
    ) -> bool:
        """A pass's end, in one transaction: each account's cursor moves to its position
        (never back, and only if no resend moved it back since the pass read it: its
        generation is still the one in `generations`, 0 when absent), the attempts are kept,
        and the endpoint's health becomes `outcome` (disabled, with its reason, when the retry
        window is over). False, and nothing written, for an endpoint deleted meanwhile: its row
        is locked first (FOR KEY SHARE, which `delete`'s FOR UPDATE waits for, and the other way
        round), so no cursor is written once its deletion began."""
        async with self.db.transaction() as uow:
            conn = uow.conn
            exists = (
                await conn.execute(
                    sa.select(endpoints.c.id)
                    .where(endpoints.c.id == endpoint_id)
                    .with_for_update(read=True, key_share=True)
                )
            ).first()  # `delete` waits for this commit
            if exists is None:
                return False
            if positions:
                await _advance(conn, endpoint_id, positions, generations or {})
            if attempts:
                await conn.execute(sa.insert(deliveries), [a.row(endpoint_id) for a in attempts])
            health: dict[str, Any] = {
                "failing_since": outcome.failing_since,
                "failures": outcome.failures,
                "next_attempt_at": outcome.next_attempt_at,
            }
            if outcome.disabled_reason is not None:
                health.update(
                    status=DISABLED,
                    disabled_reason=outcome.disabled_reason[:1024],
                    disabled_at=now,
                    lease_owner=None,
                    lease_until=None,
                )
            await conn.execute(
                sa.update(endpoints).where(endpoints.c.id == endpoint_id).values(**health)
            )
            return True

    async def record_attempt(self, endpoint_id: str, attempt: Attempt) -> bool:
        """An attempt outside any pass (a test event): kept, nothing else changed. False, and
        nothing written, for an endpoint deleted meanwhile (locked as `record` locks it)."""
        async with self.db.transaction() as uow:
            exists = (
                await uow.conn.execute(
                    sa.select(endpoints.c.id)
                    .where(endpoints.c.id == endpoint_id)
                    .with_for_update(read=True, key_share=True)
                )
            ).first()
            if exists is None:
                return False
            await uow.conn.execute(sa.insert(deliveries).values(**attempt.row(endpoint_id)))
            return True

    async def purge_attempts(self, older_than: datetime) -> int:
        async with self.db.transaction() as uow:
            gone = await uow.conn.execute(
                sa.delete(deliveries).where(deliveries.c.attempted_at < older_than)
            )
            return int(gone.rowcount or 0)


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


async def _advance(
    conn: AsyncConnection,
    endpoint_id: str,
    positions: dict[str, int],
    generations: dict[str, int],
) -> None:
    """Forward only, and not over a resend: a cursor whose generation changed since the pass
    read it was moved back meanwhile, and keeps that position (the next pass starts there)."""
    insert = dialect_insert(conn, cursors)
    stays = sa.or_(
        cursors.c.generation != insert.excluded.generation, cursors.c.seq > insert.excluded.seq
    )
    await conn.execute(
        insert.on_conflict_do_update(
            index_elements=["endpoint_id", "account_id"],
            set_={"seq": sa.case((stays, cursors.c.seq), else_=insert.excluded.seq)},
        ),
        [
            {
                "endpoint_id": endpoint_id,
                "account_id": account_id,
                "seq": seq,
                "generation": generations.get(account_id, 0),
            }
            for account_id, seq in sorted(positions.items())
        ],
    )


def _chunks(among: list[str] | None) -> list[list[str] | None]:
    if among is None:
        return [None]
    return [among[i : i + IN_CHUNK] for i in range(0, len(among), IN_CHUNK)]
