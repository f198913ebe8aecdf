"""Repositories: core's ports (accounts, holds, spends, jobs) on one SQL connection.

The server writes only through the batch (storage/writes/); here the reads serve the sweeper's
and the CLI's look-ups, and the write methods (`SqlAccounts.insert_new` / `save`,
`SqlHolds.add` / `save`, `SqlJobs.add` / `save`) are kept on purpose as the per-operation
reference path: one transaction per operation through `Database.transaction()`, which the
engine tests run core against beside the batch, and which `creditstream bench engine` measures
the batch against (its one-statement yardstick). A change of the schema changes both."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from core.account import Account
from core.errors import ConcurrentUpdate
from core.events import Event
from core.jobs import PROCESSING, Job
from core.model import Entry, Grant, Hold
from core.refunds import REFUND, Spend
from storage.tables import accounts, entries, events, grants, holds, jobs

UNPAIRED_SURROGATE = re.compile("[\ud800-\udfff]")


def dialect_insert(conn: AsyncConnection, table: sa.Table) -> Any:
    """An INSERT that supports ON CONFLICT on both PostgreSQL and SQLite."""
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    return module.insert(table)


class RecordColumns:
    """Attribute access on an asyncpg record, as the row mappers expect of SQLAlchemy rows."""

    __slots__ = ("_record", "_prefix")

    def __init__(self, record: Any, prefix: str = "") -> None:
        self._record, self._prefix = record, prefix

    def __getattr__(self, name: str) -> Any:
        return self._record[self._prefix + name]


def _entry_row(e: Entry) -> dict[str, Any]:
    """A journal line as its `entries` row (the per-operation path and the batch's writes)."""
    return {
        "account_id": e.account_id,
        "seq": e.seq,
        "type": e.type,
        "amount": e.amount,
        "delta": e.delta,
        "held_delta": e.held_delta,
        "reason": e.reason,
        "ref": e.ref,
        "op_id": e.op_id,
        "idempotency_key": e.idempotency_key,
        "metadata": e.metadata,
        "created_at": e.at,
    }


def account_from_row(row: Any) -> Account:
    return Account(
        account_id=row.id,
        balance=row.balance,
        held=row.held,
        seq=row.seq,
        created_at=row.created_at,
        plan=row.plan,
        paid=row.paid,
        trial_expires_at=row.trial_expires_at,
        trial_day=row.trial_day,
        trial_used=row.trial_used,
        loaded_seq=row.seq,
        low_notified=row.low_notified,
        feature_usage=_feature_usage(row),
    )


def _feature_usage(row: Any) -> dict[str, dict[str, Any]]:
    usage = row.feature_usage
    return dict(usage) if isinstance(usage, dict) else {}


def grant_from_row(row: Any) -> Grant:
    return Grant(
        row.id,
        row.account_id,
        row.amount,
        row.remaining,
        row.reason,
        row.kind,
        row.expires_at,
        row.created_at,
        row.ref,
        row.reserved,
    )


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


def entry_from_row(row: Any) -> Entry:
    return Entry(
        row.account_id,
        row.seq,
        row.type,
        row.amount,
        row.delta,
        row.held_delta,
        row.reason,
        row.ref,
        row.op_id,
        dict(row.metadata or {}),
        row.created_at,
        row.idempotency_key,
    )


def funding_grant_ids(lines: list[Entry], kind: str) -> list[str]:
    """The grants a spend's journal line says funded it (none when the spend is not there)."""
    spent = next((e for e in lines if e.type == kind), None)
    funding = spent.metadata.get("funding") if spent is not None else None
    return sorted({str(p["grant_id"]) for p in funding}) if isinstance(funding, list) else []


class SqlAccounts:
    def __init__(self, conn: AsyncConnection, saved_events: list[Event]) -> None:
        self.conn = conn
        self.saved_events = saved_events  # published by the caller once the commit succeeds

    async def insert_new(self, account: Account) -> bool:
        stmt = (
            dialect_insert(self.conn, accounts)
            .values(**self._row(account), created_at=account.created_at)
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(accounts.c.id)
        )
        inserted = (await self.conn.execute(stmt)).scalar_one_or_none()
        if inserted is None:
            return False
        await self._write_changes(account)
        return True

    async def get(self, account_id: str) -> Account | None:
        row = (
            await self.conn.execute(sa.select(accounts).where(accounts.c.id == account_id))
        ).one_or_none()
        return None if row is None else account_from_row(row)

    async def lock(self, account_id: str) -> Account | None:
        # FOR UPDATE on PostgreSQL; on SQLite the BEGIN IMMEDIATE of every write already locks
        row = (
            await self.conn.execute(
                sa.select(accounts).where(accounts.c.id == account_id).with_for_update()
            )
        ).one_or_none()
        if row is None:
            return None
        account = account_from_row(row)
        live = await self.conn.execute(
            sa.select(grants).where(grants.c.account_id == account_id, grants.c.remaining > 0)
        )
        account.grants = [grant_from_row(g) for g in live]
        return account

    async def save(self, account: Account) -> None:
        if not account.changed and not account.touched_grants:
            return
        result = await self.conn.execute(
            sa.update(accounts)
            .where(accounts.c.id == account.account_id, accounts.c.seq == account.loaded_seq)
            .values(**self._row(account))
        )
        if result.rowcount != 1:
            raise ConcurrentUpdate(f"Account {account.account_id} changed under its lock")
        await self._write_changes(account)

    async def with_due_grants(self, now: datetime, limit: int) -> list[str]:
        """The accounts of the `limit` oldest due grants. Ordered by expiry, so PostgreSQL reads
        the partial index ix_grants_due (a plain DISTINCT walked every grant ever made)."""
        oldest = (
            sa.select(grants.c.account_id)
            .where(grants.c.expires_at <= now, grants.c.remaining > grants.c.reserved)
            .order_by(grants.c.expires_at)
            .limit(limit)
            .subquery()
        )
        stmt = sa.select(oldest.c.account_id).distinct()
        return list((await self.conn.execute(stmt)).scalars())

    @staticmethod
    def _row(account: Account) -> dict[str, Any]:
        return {
            "id": account.account_id,
            "balance": account.balance,
            "held": account.held,
            "seq": account.seq,
            "plan": account.plan,
            "paid": account.paid,
            "trial_expires_at": account.trial_expires_at,
            "trial_day": account.trial_day,
            "trial_used": account.trial_used,
            "low_notified": account.low_notified,
            "feature_usage": account.feature_usage,
            "updated_at": _event_time(account.new_events[-1])
            if account.new_events
            else account.created_at,
        }

    async def _write_changes(self, account: Account) -> None:
        new_ids = {g.grant_id for g in account.new_grants}
        if account.new_grants:
            await self.conn.execute(sa.insert(grants), [_grant_row(g) for g in account.new_grants])
        for grant in account.touched_grants.values():
            if grant.grant_id not in new_ids:
                await self.conn.execute(
                    sa.update(grants)
                    .where(grants.c.id == grant.grant_id)
                    .values(remaining=grant.remaining, reserved=grant.reserved)
                )
        if account.new_entries:
            await self.conn.execute(
                sa.insert(entries),
                [_entry_row(e) for e in account.new_entries],
            )
        if account.new_events:
            await self.conn.execute(
                sa.insert(events),
                [
                    {
                        "account_id": ev.account_id,
                        "seq": ev.seq,
                        "type": ev.type,
                        "payload": ev.to_dict(),
                        "created_at": _event_time(ev),
                    }
                    for ev in account.new_events
                ],
            )
        self.saved_events.extend(account.new_events)
        account.new_entries.clear()
        account.new_events.clear()
        account.new_grants.clear()
        account.touched_grants.clear()
        account.loaded_seq = account.seq


def _event_time(event: Event) -> datetime:
    at = getattr(event, "at", None)
    if not isinstance(at, str):
        raise ValueError(f"Expected event {event.type} to carry its time, got {at!r}")
    return datetime.fromisoformat(at.replace("Z", "+00:00"))


def _grant_row(grant: Grant) -> dict[str, Any]:
    return {
        "id": grant.grant_id,
        "account_id": grant.account_id,
        "amount": grant.amount,
        "remaining": grant.remaining,
        "reserved": grant.reserved,
        "reason": grant.reason,
        "kind": grant.kind,
        "ref": grant.ref,
        "expires_at": grant.expires_at,
        "created_at": grant.created_at,
    }


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


class SqlSpends:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def find(self, spend_id: str, kind: str) -> Spend | None:
        lines, funders = await spend_rows(self.conn, spend_id, kind)
        return Spend.from_journal(spend_id, kind, lines, funders)


async def spend_rows(
    conn: AsyncConnection, spend_id: str, kind: str
) -> tuple[list[Entry], list[Grant]]:
    """A spend's journal lines (the spend and its refunds) and the grants that funded it."""
    if not storable_key(spend_id):
        return [], []
    rows = await conn.execute(
        sa.select(entries)
        .where(entries.c.op_id == spend_id, entries.c.type.in_((kind, REFUND)))
        .order_by(entries.c.id)
    )
    lines = [entry_from_row(row) for row in rows]
    grant_ids = funding_grant_ids(lines, kind)
    if not grant_ids:
        return lines, []
    found = await conn.execute(sa.select(grants).where(grants.c.id.in_(grant_ids)))
    return lines, [grant_from_row(row) for row in found]


def storable_key(value: str) -> bool:
    """Whether a looked-up id could have been stored at all. PostgreSQL text cannot hold NUL
    (it refuses the whole query) and UTF-8 cannot encode a lone surrogate: such an id, e.g. a
    hostile `%00` in a URL, names nothing, on SQLite and PostgreSQL alike."""
    return "\x00" not in value and UNPAIRED_SURROGATE.search(value) is None


def job_from_row(row: Any) -> Job:
    return Job(
        job_id=row.id,
        account_id=row.account_id,
        operation=row.operation,
        model=row.model,
        cost=row.cost,
        status=row.status,
        provider=row.provider,
        created_at=row.created_at,
        updated_at=row.updated_at,
        expires_at=row.expires_at,
        params=dict(row.params or {}),
        input=dict(row.input or {}),
        provider_task_id=row.provider_task_id,
        hold_id=row.hold_id,
        result_url=row.result_url,
        error=row.error,
        completed_at=row.completed_at,
        metadata=dict(row.metadata or {}),
    )


class SqlJobs:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, job: Job) -> None:
        await self.conn.execute(sa.insert(jobs).values(**self._row(job)))

    async def get(self, job_id: str) -> Job | None:
        if not storable_key(job_id):
            return None
        row = (await self.conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).one_or_none()
        return None if row is None else job_from_row(row)

    async def by_task(self, provider: str, task_id: str) -> Job | None:
        if not (storable_key(provider) and storable_key(task_id)):
            return None
        row = (
            await self.conn.execute(
                sa.select(jobs).where(
                    jobs.c.provider == provider, jobs.c.provider_task_id == task_id
                )
            )
        ).one_or_none()
        return None if row is None else job_from_row(row)

    async def save(self, job: Job, expected_status: str) -> None:
        result = await self.conn.execute(
            sa.update(jobs)
            .where(jobs.c.id == job.job_id, jobs.c.status == expected_status)
            .values(**self._row(job))
        )
        if result.rowcount != 1:
            raise ConcurrentUpdate(f"Job {job.job_id} left {expected_status} under its lock")

    async def due(self, now: datetime, limit: int) -> list[str]:
        stmt = (
            sa.select(jobs.c.id)
            .where(jobs.c.status == PROCESSING, jobs.c.expires_at <= now)
            .order_by(jobs.c.expires_at)
            .limit(limit)
        )
        return list((await self.conn.execute(stmt)).scalars())

    @staticmethod
    def _row(job: Job) -> dict[str, Any]:
        return {
            "id": job.job_id,
            "account_id": job.account_id,
            "operation": job.operation,
            "model": job.model,
            "params": job.params,
            "input": job.input,
            "cost": job.cost,
            "status": job.status,
            "result_url": job.result_url,
            "error": job.error,
            "provider": job.provider,
            "provider_task_id": job.provider_task_id,
            "hold_id": job.hold_id,
            "created_at": job.created_at,
            "updated_at": job.updated_at,
            "expires_at": job.expires_at,
            "completed_at": job.completed_at,
            "metadata": job.metadata,
        }
