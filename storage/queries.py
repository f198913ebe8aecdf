"""Read models: journal pages, the event stream, usage figures and the conservation audit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from core.events import iso
from core.model import Hold
from storage.retention import MIN_EVENTS_RETENTION
from storage.tables import accounts, entries, events, grants, holds, jobs


def entry_to_dict(row: Any) -> dict[str, Any]:
    return {
        "entry_id": row.id,
        "account_id": row.account_id,
        "seq": row.seq,
        "type": row.type,
        "amount": row.amount,
        "delta": row.delta,
        "held_delta": row.held_delta,
        "reason": row.reason,
        "ref": row.ref,
        "op_id": row.op_id,
        "idempotency_key": row.idempotency_key,
        "metadata": row.metadata or {},
        "created_at": iso(row.created_at),
    }


# the expressions of the index ix_entries_refund_id (migration 0005), written out: SQLAlchemy's
# JSON operators pass the key as a bound parameter, which no expression index matches
REFUND_ID_EXPRESSION = {
    "postgresql": "(entries.metadata ->> 'refund_id')",
    "sqlite": "JSON_EXTRACT(entries.metadata, '$.refund_id')",
}


async def refunded_spend(conn: AsyncConnection, refund_id: str) -> tuple[str, str] | None:
    """The spend a refund gave back (its id and kind: "charge" or "capture"), found through
    the partial expression index on refund lines (migration 0005); the type is inlined so the
    planner can match the index's predicate (a bound parameter would not)."""
    if not refund_id.startswith("rfd_") or len(refund_id) > 64 or not refund_id.isascii():
        return None
    row = (
        await conn.execute(
            sa.select(entries.c.op_id, entries.c.metadata).where(
                entries.c.type == sa.literal_column("'refund'"),
                sa.literal_column(REFUND_ID_EXPRESSION[conn.dialect.name]) == refund_id,
            )
        )
    ).first()
    if row is None:
        return None
    return row.op_id, str((row.metadata or {}).get("refund_of"))


async def entries_page(
    conn: AsyncConnection, account_id: str, after: int, limit: int
) -> list[dict[str, Any]]:
    rows = await conn.execute(
        sa.select(entries)
        .where(entries.c.account_id == account_id, entries.c.id > after)
        .order_by(entries.c.id)
        .limit(limit)
    )
    return [entry_to_dict(r) for r in rows]


async def events_after(
    conn: AsyncConnection, account_id: str, after_seq: int, limit: int
) -> list[dict[str, Any]]:
    rows = await conn.execute(
        sa.select(events.c.payload)
        .where(events.c.account_id == account_id, events.c.seq > after_seq)
        .order_by(events.c.seq)
        .limit(limit)
    )
    return [dict(r.payload) for r in rows]


Tally = dict[str, int]


def _add(tallies: dict[str, Tally], name: str, credits: int, runs: int = 1) -> None:
    slot = tallies.setdefault(name, {"count": 0, "credits": 0})
    slot["count"] += runs
    slot["credits"] += credits


def _days(since: datetime, until: datetime) -> dict[str, dict[str, Any]]:
    """One empty tally per UTC day of the period, oldest first."""
    days: dict[str, dict[str, Any]] = {}
    day = since.date()
    while day <= until.date():
        days[day.isoformat()] = {
            "date": day.isoformat(),
            "count": 0,
            "credits": 0,
            "operations": {},
            "models": {},
        }
        day += timedelta(days=1)
    return days


async def usage(
    conn: AsyncConnection, account_id: str, since: datetime, until: datetime
) -> dict[str, Any]:
    """Credits spent (captures and charges) since `since`, net of their refunds: in all, by
    operation, by model and per UTC day; and jobs by status. A refund counts against its
    spend's operation, model and day (a refund comes after its spend, so one made in the
    period of a spend made before it is left out); counts are of runs, refunded or not."""
    spent = await conn.execute(
        sa.select(entries.c.type, entries.c.amount, entries.c.metadata, entries.c.created_at).where(
            entries.c.account_id == account_id,
            entries.c.created_at >= since,
            entries.c.type.in_(("capture", "charge", "refund")),
        )
    )
    per_operation: dict[str, Tally] = {}
    per_model: dict[str, Tally] = {}
    days = _days(since, until)
    used = refunded = 0
    for row in spent:
        details = row.metadata or {}
        at, credits, runs = row.created_at, row.amount, 1
        if row.type == "refund":
            spent_at = details.get("spent_at")
            if isinstance(spent_at, str):
                at = datetime.fromisoformat(spent_at.replace("Z", "+00:00"))
            if at < since:
                continue
            credits, runs = -row.amount, 0
            refunded += row.amount
        used += credits
        operation = details.get("operation") or "other"
        model = details.get("model")
        _add(per_operation, operation, credits, runs)
        day = days.get(at.date().isoformat())
        if day is not None:
            day["count"] += runs
            day["credits"] += credits
            _add(day["operations"], operation, credits, runs)
        if isinstance(model, str):
            _add(per_model, model, credits, runs)
            if day is not None:
                _add(day["models"], model, credits, runs)
    by_status = await conn.execute(
        sa.select(jobs.c.status, sa.func.count())
        .where(jobs.c.account_id == account_id, jobs.c.created_at >= since)
        .group_by(jobs.c.status)
    )
    job_counts = {"processing": 0, "success": 0, "failed": 0}
    job_counts.update({status: int(count) for status, count in by_status})
    return {
        "credits_used": used,
        "credits_refunded": refunded,
        "operations": per_operation,
        "models": per_model,
        "days": list(days.values()),
        "jobs": job_counts,
    }


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


def job_to_dict(row: Any) -> dict[str, Any]:
    return {
        "job_id": row.id,
        "account_id": row.account_id,
        "operation": row.operation,
        "model": row.model,
        "params": row.params or {},
        "cost": row.cost,
        "status": row.status,
        "result_url": row.result_url,
        "error": row.error,
        "provider": row.provider,
        "provider_task_id": row.provider_task_id,
        "hold_id": row.hold_id,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "expires_at": iso(row.expires_at),
        "completed_at": iso(row.completed_at),
        "metadata": row.metadata or {},
    }


async def jobs_of(
    conn: AsyncConnection, account_id: str, status: str | None, limit: int
) -> list[dict[str, Any]]:
    stmt = sa.select(jobs).where(jobs.c.account_id == account_id)
    if status is not None:
        stmt = stmt.where(jobs.c.status == status)
    rows = await conn.execute(
        stmt.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)
    )
    return [job_to_dict(r) for r in rows]
