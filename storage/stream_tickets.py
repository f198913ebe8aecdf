"""Stream tickets: a one-use, short-lived credential for opening one WebSocket or SSE stream,
so a browser need not put its long-lived user token in a URL (URLs land in proxies' logs and
browser histories). Kept in the database, so a ticket made on one instance opens a stream on any
other; only its SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import sqlalchemy as sa

from storage.sql import Database
from storage.tables import stream_tickets

TICKET_PREFIX = "st_"
# expired tickets stay this long past their expiry before the next issue deletes them, so a
# redemption racing the clean-up is answered "expired" by its own check, never by chance
CLEANUP_GRACE_S = 60


@dataclass(frozen=True)
class Redeemed:
    account_id: str
    credential_expires: int | None  # unix seconds; None: made with a server key


def _hash(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


async def issue_ticket(
    db: Database, account_id: str, credential_expires: int | None, now_s: float, ttl_s: int
) -> tuple[str, int]:
    """A new ticket for `account_id`, and its expiry (unix seconds)."""
    ticket = TICKET_PREFIX + secrets.token_urlsafe(32)
    expires_at = int(now_s) + ttl_s
    async with db.transaction() as uow:
        await uow.conn.execute(
            sa.delete(stream_tickets).where(
                stream_tickets.c.expires_at < int(now_s) - CLEANUP_GRACE_S
            )
        )
        await uow.conn.execute(
            sa.insert(stream_tickets).values(
                ticket_hash=_hash(ticket),
                account_id=account_id,
                expires_at=expires_at,
                credential_expires=credential_expires,
            )
        )
    return ticket, expires_at


async def redeem_ticket(db: Database, ticket: str, now_s: float) -> Redeemed | None:
    """The ticket's account, once: one DELETE … RETURNING takes the row, so of two connections
    redeeming the same ticket (on any instances) exactly one gets it. None when unknown, used
    or expired."""
    if not ticket.startswith(TICKET_PREFIX) or len(ticket) > 128:
        return None
    table = stream_tickets
    async with db.transaction() as uow:
        row = (
            await uow.conn.execute(
                sa.delete(table)
                .where(table.c.ticket_hash == _hash(ticket))
                .returning(table.c.account_id, table.c.expires_at, table.c.credential_expires)
            )
        ).first()
    if row is None or row.expires_at <= now_s:
        return None
    return Redeemed(row.account_id, row.credential_expires)
