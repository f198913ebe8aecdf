"""Webhook delivery records: a pass's attempts and outcome, kept with its cursors' advance."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.dialects import dialect_insert
from storage.sql import Database
from storage.tables import webhook_cursors as cursors
from storage.tables import webhook_deliveries as deliveries
from storage.tables import webhook_endpoints as endpoints
from storage.webhook_backlog import WebhookBacklog
from storage.webhook_endpoint_record import DISABLED
from storage.webhook_leases import WebhookLeases

# the registry itself is storage/webhook_endpoints.py


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


class WebhookDeliveries(WebhookLeases, WebhookBacklog):
    """Delivering to endpoints: their leases, their backlog, and what each pass records."""

    def __init__(self, db: Database) -> None:
        self.db = db

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
