"""Reads of an account's journal: entry pages, events after a seq, what a refund gave back."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from core.events import iso
from storage.tables import entries, events


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
