"""The spend repository: a spend read back from its journal lines and the grants that funded it."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from core.model import Entry, Grant
from core.refunds import REFUND, Spend
from storage.account_repository import entry_from_row, grant_from_row
from storage.dialects import storable_key
from storage.tables import entries, grants


def funding_grant_ids(lines: list[Entry], kind: str) -> list[str]:
    """The grants a spend's journal line says funded it (none when the spend is not there)."""
    spent = next((e for e in lines if e.type == kind), None)
    funding = spent.metadata.get("funding") if spent is not None else None
    return sorted({str(p["grant_id"]) for p in funding}) if isinstance(funding, list) else []


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
