"""A batch's pending writes as rows: per table, in foreign-key order, the rows to insert and the
rows to update. Each batch session (SQLite, PostgreSQL) writes them with one statement per table
and kind of write, whatever the number of operations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from storage.account_repository import SqlAccounts, _entry_row, _event_time, _grant_row
from storage.hold_repository import SqlHolds
from storage.job_repository import SqlJobs
from storage.tables import accounts, entries, events, grants, holds, jobs, processed_webhooks
from storage.writes.batch import PendingWrites

Row = dict[str, Any]


@dataclass(frozen=True)
class TableWrites:
    table: sa.Table
    inserts: list[Row]
    updates: list[Row]  # keyed by the table's `id`, the columns given set


# what can change in a grant or a hold once written (core.grants, core.holds: a grant's
# remaining and reserved credits; a hold's ending): their updates set only these, fewer arrays
# to send and fewer values for PostgreSQL to write
GRANT_CHANGES = ("id", "remaining", "reserved")
HOLD_CHANGES = ("id", "status", "captured_amount", "release_reason", "closed_at", "funding")


def planned_writes(writes: PendingWrites, now: datetime) -> list[TableWrites]:
    """Accounts before the rows that point at them."""
    return [
        _split(
            accounts,
            [
                ({**SqlAccounts._row(a), "created_at": a.created_at}, new)
                for a, new in writes.accounts.values()
            ],
        ),
        _split(grants, [(_grant_row(g), new) for g, new in writes.grants.values()], GRANT_CHANGES),
        _split(holds, [(SqlHolds._row(h), new) for h, new in writes.holds.values()], HOLD_CHANGES),
        _split(jobs, [(SqlJobs._row(j), new) for j, new in writes.jobs.values()]),
        TableWrites(
            entries,
            [_entry_row(e) for e in writes.entries],
            [],
        ),
        TableWrites(
            events,
            [
                {
                    "account_id": ev.account_id,
                    "seq": ev.seq,
                    "type": ev.type,
                    "payload": ev.to_dict(),
                    "created_at": _event_time(ev),
                }
                for ev in writes.events
            ],
            [],
        ),
        # a concurrent delivery of the same payment event on another instance fails this
        # insert: the batch runs again and the retry answers as a duplicate
        TableWrites(
            processed_webhooks,
            [
                {
                    "provider": provider,
                    "event_id": event_id,
                    "response": response,
                    "created_at": now,
                }
                for (provider, event_id), response in writes.webhooks.items()
            ],
            [],
        ),
    ]


def _split(
    table: sa.Table, rows: list[tuple[Row, bool]], changes: tuple[str, ...] | None = None
) -> TableWrites:
    updates = [row for row, new in rows if not new]
    if changes is not None:
        updates = [{name: row[name] for name in changes} for row in updates]
    return TableWrites(table, [row for row, new in rows if new], updates)
