"""A batch's reads and writes through SQLAlchemy Core: the embedded SQLite default.

SQLite serialises writers anyway (every write transaction starts with BEGIN IMMEDIATE), so row
locks need no statement of their own here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from core.account import Account
from core.jobs import Job
from core.model import Entry, Grant, Hold
from storage.account_repository import account_from_row, grant_from_row
from storage.dialects import dialect_insert
from storage.hold_repository import hold_from_row
from storage.job_repository import job_from_row
from storage.spend_repository import spend_rows
from storage.tables import (
    accounts,
    grants,
    holds,
    idempotency_answers,
    idempotency_keys,
    jobs,
    processed_webhooks,
)
from storage.writes.batch import PendingWrites
from storage.writes.batch_writes import planned_writes
from storage.writes.committed_accounts import Version
from storage.writes.idempotency import (
    DONE,
    IN_PROGRESS,
    IdempotencyKey,
    KeyId,
    StoredResponse,
    stored_response,
)


class SqlBatchSession:
    """One batch's transaction on a SQLAlchemy connection."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    # -- reads --------------------------------------------------------------------------------

    async def lock_accounts(
        self, account_ids: Sequence[str], hold_ids: Sequence[str] = (), job_ids: Sequence[str] = ()
    ) -> list[Account]:
        owners = set(account_ids)
        if hold_ids:
            owners.update(h.account_id for h in await self.holds(hold_ids))
        if job_ids:
            owners.update(j.account_id for j in await self.jobs(job_ids))
        rows = await self.conn.execute(
            sa.select(accounts)
            .where(accounts.c.id.in_(sorted(owners)))
            .order_by(accounts.c.id)
            .with_for_update()
        )
        found = {row.id: account_from_row(row) for row in rows}
        if found:
            live = await self.conn.execute(
                sa.select(grants).where(
                    grants.c.account_id.in_(sorted(found)), grants.c.remaining > 0
                )
            )
            for row in live:
                found[row.account_id].grants.append(grant_from_row(row))
        return list(found.values())

    async def holds(self, hold_ids: Sequence[str]) -> list[Hold]:
        rows = await self.conn.execute(sa.select(holds).where(holds.c.id.in_(hold_ids)))
        return [hold_from_row(row) for row in rows]

    async def jobs(self, job_ids: Sequence[str]) -> list[Job]:
        rows = await self.conn.execute(sa.select(jobs).where(jobs.c.id.in_(job_ids)))
        return [job_from_row(row) for row in rows]

    async def job_by_task(self, provider: str, task_id: str) -> Job | None:
        row = (
            await self.conn.execute(
                sa.select(jobs).where(
                    jobs.c.provider == provider, jobs.c.provider_task_id == task_id
                )
            )
        ).one_or_none()
        return None if row is None else job_from_row(row)

    async def spend(self, spend_id: str, kind: str) -> tuple[list[Entry], list[Grant]]:
        return await spend_rows(self.conn, spend_id, kind)

    async def webhook_response(self, provider: str, event_id: str) -> dict[str, Any] | None:
        row = (
            await self.conn.execute(
                sa.select(processed_webhooks.c.response).where(
                    processed_webhooks.c.provider == provider,
                    processed_webhooks.c.event_id == event_id,
                )
            )
        ).one_or_none()
        return None if row is None else dict(row.response or {})

    # -- idempotency keys ---------------------------------------------------------------------

    def lock_with_claim(self, account_ids: Sequence[str]) -> None:
        """One statement at a time here: the accounts are locked when the batch asks."""

    async def claim(self, ordered: list[IdempotencyKey], now: datetime) -> list[KeyId]:
        inserted = await self.conn.execute(
            dialect_insert(self.conn, idempotency_keys)
            .values(
                [
                    {
                        "scope": k.scope,
                        "key": k.key,
                        "fingerprint": k.fingerprint,
                        "status": IN_PROGRESS,
                        "created_at": now,
                        "locked_at": now,
                    }
                    for k in ordered
                ]
            )
            .on_conflict_do_nothing(index_elements=["scope", "key"])
            .returning(idempotency_keys.c.scope, idempotency_keys.c.key)
        )
        return [(r.scope, r.key) for r in inserted]

    async def stored(self, key_ids: list[KeyId]) -> dict[KeyId, StoredResponse]:
        k, a = idempotency_keys, idempotency_answers
        rows = await self.conn.execute(
            sa.select(
                k.c.scope,
                k.c.key,
                k.c.fingerprint,
                (a.c.scope.is_not(None) | (k.c.status == DONE)).label("answered"),
                sa.func.coalesce(a.c.response_status, k.c.response_status).label("status"),
                sa.func.coalesce(a.c.response_body, k.c.response_body).label("body"),
            )
            .select_from(k.outerjoin(a, (a.c.scope == k.c.scope) & (a.c.key == k.c.key)))
            .where(sa.tuple_(k.c.scope, k.c.key).in_(key_ids))
        )
        return {
            (r.scope, r.key): stored_response(r.fingerprint, bool(r.answered), r.status, r.body)
            for r in rows
        }

    async def record(self, responses: dict[KeyId, tuple[int, Any]]) -> None:
        # an upsert, as on PostgreSQL (batch_pg.py): it replaces an answer left without a claim
        upsert = dialect_insert(self.conn, idempotency_answers)
        await self.conn.execute(
            upsert.on_conflict_do_update(
                index_elements=["scope", "key"],
                set_={
                    "response_status": upsert.excluded.response_status,
                    "response_body": upsert.excluded.response_body,
                },
            ),
            [
                {
                    "scope": scope,
                    "key": key,
                    "response_status": status,
                    "response_body": json.dumps(body),
                }
                for (scope, key), (status, body) in responses.items()
            ],
        )

    async def unclaim(self, key_ids: Iterable[KeyId]) -> None:
        for scope, key in key_ids:
            await self.conn.execute(
                sa.delete(idempotency_keys).where(
                    idempotency_keys.c.scope == scope, idempotency_keys.c.key == key
                )
            )

    # -- writes -------------------------------------------------------------------------------

    def claim_with_write(self, keys: list[IdempotencyKey]) -> None:
        raise NotImplementedError("a SQLite batch locks the database first (BEGIN IMMEDIATE)")

    def expect(self, versions: dict[str, Version]) -> None:
        raise NotImplementedError("a SQLite batch locks the database first (BEGIN IMMEDIATE)")

    async def flush(self, writes: PendingWrites, now: datetime) -> dict[str, Version]:
        for planned in planned_writes(writes, now):
            if planned.inserts:
                await self.conn.execute(sa.insert(planned.table), planned.inserts)
            if planned.updates:
                # the SET clause is taken from the parameters' keys
                await self.conn.execute(
                    sa.update(planned.table).where(planned.table.c.id == sa.bindparam("row_id")),
                    [
                        {"row_id": row["id"], **{c: v for c, v in row.items() if c != "id"}}
                        for row in planned.updates
                    ],
                )
        return {}  # no versions: nothing remembers accounts on SQLite
