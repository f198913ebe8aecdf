"""Outbound webhook endpoints in SQL: the registry (register, list, read, remove) and the
attempts an operator reads. Delivering to them — cursors, leases, the attempts' writing — is
storage/webhook_deliveries.py."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from core.events import iso
from core.model import new_id
from storage.repositories import storable_key
from storage.sql import Database
from storage.tables import accounts, events
from storage.tables import webhook_cursors as cursors
from storage.tables import webhook_deliveries as deliveries
from storage.tables import webhook_endpoints as endpoints
from storage.writes import idempotency
from storage.writes.batch_sql import SqlBatchSession
from storage.writes.idempotency import IdempotencyKey, KeyedResult, replay_of

ENABLED, DISABLED = "enabled", "disabled"
SECRET_PREFIX = "whsec_"
IN_CHUNK = 500  # account ids per IN (…)


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: str
    url: str
    events: tuple[str, ...]
    secret: str
    status: str
    disabled_reason: str | None
    created_at: datetime
    disabled_at: datetime | None
    failing_since: datetime | None
    failures: int
    next_attempt_at: datetime | None

    @property
    def enabled(self) -> bool:
        return self.status == ENABLED

    def to_dict(self, with_secret: bool = False) -> dict[str, Any]:
        """What the API shows; the secret only once, in the answer to the registration."""
        shown: dict[str, Any] = {
            "id": self.endpoint_id,
            "url": self.url,
            "events": list(self.events),
            "status": self.status,
            "disabled_reason": self.disabled_reason,
            "created_at": iso(self.created_at),
            "disabled_at": iso(self.disabled_at),
            "failing_since": iso(self.failing_since),
            "consecutive_failures": self.failures,
            "next_attempt_at": iso(self.next_attempt_at),
        }
        if with_secret:
            shown["secret"] = self.secret
        return shown


@dataclass(frozen=True)
class Rewound:
    """A resend's answer: the account's head, and how many of its events from `from_seq` the
    endpoint takes (what will be delivered again). `moved`: False when nothing was written
    (`from_seq` past the head)."""

    head: int
    events: int
    moved: bool


class WebhookEndpoints:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- the registry ------------------------------------------------------------------

    async def create(
        self,
        url: str,
        event_types: list[str],
        now: datetime,
        key: IdempotencyKey | None,
        render: Callable[[Endpoint], dict[str, Any]],
    ) -> KeyedResult:
        """Register an endpoint: from now on, every account's stream past its present head.
        With an Idempotency-Key the key is claimed in the same transaction, so a retry replays
        the first answer (its secret included) and never registers a second endpoint."""
        endpoint = Endpoint(
            new_id("we"),
            url,
            tuple(event_types),
            SECRET_PREFIX + secrets.token_urlsafe(32),
            ENABLED,
            None,
            now,
            None,
            None,
            0,
            None,
        )
        async with self.db.transaction() as uow:
            conn = uow.conn
            keys = SqlBatchSession(conn)  # the key claimed as a batch claims its keys
            if key is not None:
                first = (await idempotency.claim(keys, [key], now))[key.id]
                if first is not None:
                    return replay_of(first, key)
            await conn.execute(
                sa.insert(endpoints).values(
                    id=endpoint.endpoint_id,
                    url=url,
                    events=list(event_types),
                    secret=endpoint.secret,
                    status=ENABLED,
                    created_at=now,
                    failures=0,
                )
            )
            await conn.execute(
                sa.insert(cursors).from_select(
                    ["endpoint_id", "account_id", "seq"],
                    sa.select(
                        sa.literal(endpoint.endpoint_id, sa.String), accounts.c.id, accounts.c.seq
                    ),
                )
            )
            body = render(endpoint)
            if key is not None:
                await keys.record({key.id: (201, body)})
        return KeyedResult(201, body)

    async def registered(self) -> list[Endpoint]:
        async with self.db.read() as uow:
            rows = await uow.conn.execute(
                sa.select(endpoints).order_by(endpoints.c.created_at, endpoints.c.id)
            )
            return [endpoint_from_row(row) for row in rows]

    async def get(self, endpoint_id: str) -> Endpoint | None:
        if not storable_key(endpoint_id):
            return None
        async with self.db.read(snapshot=False) as uow:
            row = (
                await uow.conn.execute(sa.select(endpoints).where(endpoints.c.id == endpoint_id))
            ).first()
            return None if row is None else endpoint_from_row(row)

    async def delete(self, endpoint_id: str) -> Endpoint | None:
        """Remove an endpoint with its cursors and attempts; None when there was none. An
        instance delivering to it right now finishes its attempt and then finds it gone.

        The endpoint's row is locked first (FOR UPDATE), and `record` locks it too before it
        writes a cursor: a cursor written between this DELETE of the cursors and that of the
        endpoint would otherwise break the foreign key (SQLite runs writers one at a time)."""
        if not storable_key(endpoint_id):
            return None
        async with self.db.transaction() as uow:
            row = (
                await uow.conn.execute(
                    sa.select(endpoints).where(endpoints.c.id == endpoint_id).with_for_update()
                )
            ).first()
            if row is None:
                return None
            for table in (cursors, deliveries):
                await uow.conn.execute(sa.delete(table).where(table.c.endpoint_id == endpoint_id))
            await uow.conn.execute(sa.delete(endpoints).where(endpoints.c.id == endpoint_id))
            return endpoint_from_row(row)

    async def enable(self, endpoint_id: str, now: datetime) -> Endpoint | None:
        """A disabled endpoint enabled again: healthy, due now, and every instance's next pass
        looks at every account (its cursors are where delivery stopped, so what accumulated
        meanwhile goes out, in order). An enabled endpoint is left as it is. None: none."""
        if not storable_key(endpoint_id):
            return None
        async with self.db.transaction() as uow:
            await uow.conn.execute(
                sa.update(endpoints)
                .where(endpoints.c.id == endpoint_id, endpoints.c.status == DISABLED)
                .values(
                    status=ENABLED,
                    disabled_reason=None,
                    disabled_at=None,
                    failing_since=None,
                    failures=0,
                    next_attempt_at=now,
                    rescans=endpoints.c.rescans + 1,
                )
            )
            row = (
                await uow.conn.execute(sa.select(endpoints).where(endpoints.c.id == endpoint_id))
            ).first()
            return None if row is None else endpoint_from_row(row)

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

    async def attempts(self, endpoint_id: str, limit: int) -> list[dict[str, Any]]:
        """The endpoint's latest attempts, newest first."""
        if not storable_key(endpoint_id):
            return []
        async with self.db.read(snapshot=False) as uow:
            rows = await uow.conn.execute(
                sa.select(deliveries)
                .where(deliveries.c.endpoint_id == endpoint_id)
                .order_by(deliveries.c.id.desc())
                .limit(limit)
            )
            return [
                {
                    "id": row.id,
                    # a test event belongs to no account's stream
                    "account_id": row.account_id or None,
                    "seq": row.seq or None,
                    "event": row.event_type,
                    "status_code": row.status_code,
                    "error": row.error,
                    "ok": row.error is None,
                    "duration_ms": row.duration_ms,
                    "attempted_at": iso(row.attempted_at),
                    "next_retry_at": iso(row.next_retry_at),
                }
                for row in rows
            ]


def as_utc(stamp: datetime | None) -> datetime | None:
    if stamp is None or stamp.tzinfo is not None:
        return stamp
    return stamp.replace(tzinfo=UTC)


def endpoint_from_row(row: Any) -> Endpoint:
    return Endpoint(
        row.id,
        row.url,
        tuple(row.events),
        row.secret,
        row.status,
        row.disabled_reason,
        row.created_at,
        row.disabled_at,
        row.failing_since,
        int(row.failures),
        row.next_attempt_at,
    )
