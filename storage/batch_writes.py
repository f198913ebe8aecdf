"""A batch's pending writes as a fixed number of set-based statements: one per table and kind of
write, whatever the number of operations (arrays on PostgreSQL, executemany on SQLite)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storage import pg_arrays
from storage.batch import PendingWrites
from storage.repositories import SqlAccounts, SqlHolds, SqlJobs, _event_time, _grant_row
from storage.tables import accounts, entries, events, grants, holds, jobs, processed_webhooks


async def flush(conn: AsyncConnection, writes: PendingWrites, now: datetime) -> None:
    """Write in foreign-key order: accounts before the rows that point at them."""
    await _insert_and_update(conn, accounts, {
        account_id: ({**SqlAccounts._row(account), "created_at": account.created_at}, new)
        for account_id, (account, new) in writes.accounts.items()})
    await _insert_and_update(conn, grants, {
        grant_id: (_grant_row(grant), new) for grant_id, (grant, new) in writes.grants.items()})
    await _insert_and_update(conn, holds, {
        hold_id: (SqlHolds._row(hold), new) for hold_id, (hold, new) in writes.holds.items()})
    await _insert_and_update(conn, jobs, {
        job_id: (SqlJobs._row(job), new) for job_id, (job, new) in writes.jobs.items()})
    await insert(conn, entries, [
        {"account_id": e.account_id, "seq": e.seq, "type": e.type, "amount": e.amount,
         "delta": e.delta, "held_delta": e.held_delta, "reason": e.reason, "ref": e.ref,
         "op_id": e.op_id, "idempotency_key": e.idempotency_key, "metadata": e.metadata,
         "created_at": e.at} for e in writes.entries])
    await insert(conn, events, [
        {"account_id": ev.account_id, "seq": ev.seq, "type": ev.type,
         "payload": ev.to_dict(), "created_at": _event_time(ev)} for ev in writes.events])
    # a concurrent delivery of the same payment event on another instance fails this insert:
    # the batch runs again and the retry answers as a duplicate
    await insert(conn, processed_webhooks, [
        {"provider": provider, "event_id": event_id, "response": response, "created_at": now}
        for (provider, event_id), response in writes.webhooks.items()])


async def insert(conn: AsyncConnection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        await pg_arrays.insert_rows(conn, table, rows)
    else:
        await conn.execute(sa.insert(table), list(rows))


async def update(conn: AsyncConnection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """Rows keyed by `id`, updated whole (the batch holds their account's lock)."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        await pg_arrays.update_rows(conn, table, rows)
        return
    # the SET clause is taken from the parameters' keys
    await conn.execute(sa.update(table).where(table.c.id == sa.bindparam("row_id")),
                       [{"row_id": row["id"], **{c: v for c, v in row.items() if c != "id"}}
                        for row in rows])


async def _insert_and_update(conn: AsyncConnection, table: sa.Table,
                             rows: Mapping[str, tuple[dict[str, Any], bool]]) -> None:
    """Rows new in this batch are inserted, the others updated."""
    await insert(conn, table, [row for row, new in rows.values() if new])
    await update(conn, table, [row for row, new in rows.values() if not new])
