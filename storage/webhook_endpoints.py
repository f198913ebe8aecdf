"""The outbound webhook endpoint registry: register, list, read, remove, enable; the attempts."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from core.events import iso
from core.model import new_id
from storage.dialects import storable_key
from storage.sql import Database
from storage.tables import accounts
from storage.tables import webhook_cursors as cursors
from storage.tables import webhook_deliveries as deliveries
from storage.tables import webhook_endpoints as endpoints
from storage.webhook_endpoint_record import DISABLED, ENABLED, Endpoint, endpoint_from_row
from storage.webhook_resends import WebhookResends
from storage.writes import idempotency
from storage.writes.batch_sql import SqlBatchSession
from storage.writes.idempotency import IdempotencyKey, KeyedResult, replay_of

# delivering to an endpoint (cursors, leases, writing the attempts) is storage/webhook_deliveries.py
SECRET_PREFIX = "whsec_"


class WebhookEndpoints(WebhookResends):
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
