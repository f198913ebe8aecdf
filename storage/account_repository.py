"""The account repository: accounts with their grants, journal entries and events, in SQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from core.account import Account
from core.errors import ConcurrentUpdate
from core.events import Event
from core.model import Entry, Grant
from storage.dialects import dialect_insert
from storage.tables import accounts, entries, events, grants

# The server writes only through the batch (storage/writes/); here the reads serve the sweeper's
# and the CLI's look-ups, and the write methods (`SqlAccounts.insert_new` / `save`,
# `SqlHolds.add` / `save`, `SqlJobs.add` / `save`) are kept on purpose as the per-operation
# reference path: one transaction per operation through `Database.transaction()`, which the
# engine tests run core against beside the batch, and which `creditstream bench engine` measures
# the batch against (its one-statement yardstick). A change of the schema changes both.


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
            .where(
                grants.c.expires_at <= now,
                grants.c.remaining > 0,  # what ix_grants_due's predicate names
                grants.c.remaining > grants.c.reserved,
            )
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
