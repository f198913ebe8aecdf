"""The operator console's credentials: one-time sign-in tokens (made by `creditstream console`)
and the sessions they open. Only the SHA-256 of either is stored, so a copy of the database
signs nobody in; both live in the database, so a link printed for one instance works on any
other, and a session too."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import sqlalchemy as sa

from storage.sql import Database
from storage.tables import console_sessions, console_sign_ins

SIGN_IN_PREFIX = "csi_"
SESSION_PREFIX = "css_"
MAX_SECRET_LENGTH = 128
# rows past their expiry stay this long before the next issue deletes them, so a redemption
# racing the clean-up is refused by its own expiry check, never by chance
CLEANUP_GRACE_S = 60


@dataclass(frozen=True)
class ConsoleSession:
    operator: str
    expires_at: int  # unix seconds


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def _issue(db: Database, table: sa.Table, prefix: str, operator: str, expires: int) -> str:
    secret = prefix + secrets.token_urlsafe(32)
    async with db.transaction() as uow:
        await uow.conn.execute(
            sa.insert(table).values(
                secret_hash=_hash(secret), operator=operator, expires_at=expires
            )
        )
    return secret


async def _purge_expired(db: Database, table: sa.Table, now_s: float) -> None:
    async with db.transaction() as uow:
        await uow.conn.execute(
            sa.delete(table).where(table.c.expires_at < int(now_s) - CLEANUP_GRACE_S)
        )


async def issue_sign_in(db: Database, operator: str, now_s: float, ttl_s: int) -> str:
    """A new one-time sign-in token for `operator`, valid `ttl_s` seconds."""
    await _purge_expired(db, console_sign_ins, now_s)
    return await _issue(db, console_sign_ins, SIGN_IN_PREFIX, operator, int(now_s) + ttl_s)


async def redeem_sign_in(db: Database, token: str, now_s: float) -> str | None:
    """The operator a sign-in token names, once: one DELETE … RETURNING takes the row, so of
    two visits of the same link (on any instances) exactly one signs in. None when unknown,
    used or expired."""
    if not token.startswith(SIGN_IN_PREFIX) or len(token) > MAX_SECRET_LENGTH:
        return None
    table = console_sign_ins
    async with db.transaction() as uow:
        row = (
            await uow.conn.execute(
                sa.delete(table)
                .where(table.c.secret_hash == _hash(token))
                .returning(table.c.operator, table.c.expires_at)
            )
        ).first()
    if row is None or row.expires_at <= now_s:
        return None
    return str(row.operator)


async def open_session(db: Database, operator: str, now_s: float, ttl_s: int) -> str:
    """A new session id for `operator` (the cookie's value), valid `ttl_s` seconds."""
    await _purge_expired(db, console_sessions, now_s)
    return await _issue(db, console_sessions, SESSION_PREFIX, operator, int(now_s) + ttl_s)


async def find_session(db: Database, session_id: str, now_s: float) -> ConsoleSession | None:
    if not session_id.startswith(SESSION_PREFIX) or len(session_id) > MAX_SECRET_LENGTH:
        return None
    table = console_sessions
    async with db.read(snapshot=False) as uow:
        row = (
            await uow.conn.execute(
                sa.select(table.c.operator, table.c.expires_at).where(
                    table.c.secret_hash == _hash(session_id)
                )
            )
        ).first()
    if row is None or row.expires_at <= now_s:
        return None
    return ConsoleSession(str(row.operator), int(row.expires_at))


async def end_session(db: Database, session_id: str) -> None:
    async with db.transaction() as uow:
        await uow.conn.execute(
            sa.delete(console_sessions).where(console_sessions.c.secret_hash == _hash(session_id))
        )
