"""The conservation audit: each account's balance, held and stream against its journal."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from core.model import Hold
from storage.retention import MIN_EVENTS_RETENTION
from storage.tables import accounts, entries, events, grants, holds


@dataclass(frozen=True)
class Mismatch:
    account_id: str
    field: str
    stored: int
    computed: int

    def describe(self) -> str:
        return (
            f"{self.account_id}: {self.field} is {self.stored} but the journal says {self.computed}"
        )


async def audit(conn: AsyncConnection, now: datetime | None = None) -> tuple[int, list[Mismatch]]:
    """Check G2 for every account: balance = Σ entries = Σ grant remainders, held = Σ open holds;
    and its stream: the events kept run without a gap up to its seq. Events past the journal's
    retention window are pruned oldest first, so what is kept is a suffix; an account may have
    none left only when its last event (its `updated_at`) is older than the shortest window."""
    pruned_before = (now or datetime.now(UTC)) - MIN_EVENTS_RETENTION
    entry_sums = (
        sa.select(
            entries.c.account_id,
            sa.func.sum(entries.c.delta).label("delta"),
            sa.func.sum(entries.c.held_delta).label("held"),
        )
        .group_by(entries.c.account_id)
        .subquery()
    )
    event_seqs = (
        sa.select(
            events.c.account_id,
            sa.func.max(events.c.seq).label("seq"),
            sa.func.min(events.c.seq).label("first"),
            sa.func.count().label("n"),
        )
        .group_by(events.c.account_id)
        .subquery()
    )
    open_holds = (
        sa.select(holds.c.account_id, sa.func.sum(holds.c.amount).label("held"))
        .where(holds.c.status == Hold.OPEN)
        .group_by(holds.c.account_id)
        .subquery()
    )
    remaining = (
        sa.select(
            grants.c.account_id,
            sa.func.sum(grants.c.remaining).label("left"),
            sa.func.sum(grants.c.reserved).label("reserved"),
        )
        .group_by(grants.c.account_id)
        .subquery()
    )
    rows = await conn.execute(
        sa.select(
            accounts.c.id,
            accounts.c.balance,
            accounts.c.held,
            accounts.c.seq,
            accounts.c.updated_at,
            entry_sums.c.delta,
            entry_sums.c.held.label("entry_held"),
            event_seqs.c.seq.label("event_seq"),
            event_seqs.c.first.label("event_first"),
            event_seqs.c.n.label("event_count"),
            open_holds.c.held.label("hold_held"),
            remaining.c.left,
            remaining.c.reserved,
        )
        .outerjoin(entry_sums, entry_sums.c.account_id == accounts.c.id)
        .outerjoin(event_seqs, event_seqs.c.account_id == accounts.c.id)
        .outerjoin(open_holds, open_holds.c.account_id == accounts.c.id)
        .outerjoin(remaining, remaining.c.account_id == accounts.c.id)
    )
    mismatches: list[Mismatch] = []
    checked = 0
    for row in rows:
        checked += 1
        checks = [
            ("balance", row.balance, int(row.delta or 0)),
            ("balance (grant remainders)", row.balance, int(row.left or 0)),
            ("held", row.held, int(row.entry_held or 0)),
            ("held (open holds)", row.held, int(row.hold_held or 0)),
            ("held (grant reservations)", row.held, int(row.reserved or 0)),
        ]
        if row.event_seq is not None:
            kept = int(row.event_seq) - int(row.event_first) + 1
            checks += [
                ("seq", row.seq, int(row.event_seq)),
                ("events (gap-free seq)", kept, int(row.event_count)),
            ]
        elif row.seq and row.updated_at >= pruned_before:
            checks.append(("seq (its recent events are gone)", row.seq, 0))
        mismatches += [
            Mismatch(row.id, name, stored, computed)
            for name, stored, computed in checks
            if stored != computed
        ]
        if row.held > row.balance or row.held < 0:
            mismatches.append(Mismatch(row.id, "available", row.balance - row.held, 0))
    return checked, mismatches
