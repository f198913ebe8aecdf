"""Server API keys (stored as SHA-256 hashes) and generated secrets kept in the database."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from core.model import new_id
from storage.dialects import dialect_insert
from storage.sql import Database
from storage.tables import api_keys, settings

SERVER_KEY_PREFIX = "sk_"
DEV_KEY_NAME = "dev"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_server_key(db: Database, name: str) -> str:
    """A new key, returned once in plain text; only its hash is stored."""
    key = SERVER_KEY_PREFIX + secrets.token_urlsafe(32)
    async with db.transaction() as uow:
        await uow.conn.execute(
            sa.insert(api_keys).values(
                id=new_id("key"), name=name, key_hash=hash_key(key), created_at=datetime.now(UTC)
            )
        )
    return key


async def rotate_dev_key(db: Database) -> str:
    """Dev mode's one server key, given a new secret: the key named `dev` keeps its id and
    row, so restarts never pile up keys, and the key the previous start printed stops working
    (only a hash is stored, so an old key cannot be shown again). Live `dev` keys beyond the
    first, left by versions that added one per start, are revoked."""
    key = SERVER_KEY_PREFIX + secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    async with db.transaction() as uow:
        live = (
            (
                await uow.conn.execute(
                    sa.select(api_keys.c.id)
                    .where(api_keys.c.name == DEV_KEY_NAME, api_keys.c.revoked_at.is_(None))
                    .order_by(api_keys.c.created_at, api_keys.c.id)
                )
            )
            .scalars()
            .all()
        )
        if not live:
            await uow.conn.execute(
                sa.insert(api_keys).values(
                    id=new_id("key"), name=DEV_KEY_NAME, key_hash=hash_key(key), created_at=now
                )
            )
            return key
        await uow.conn.execute(
            sa.update(api_keys).where(api_keys.c.id == live[0]).values(key_hash=hash_key(key))
        )
        if len(live) > 1:
            await uow.conn.execute(
                sa.update(api_keys).where(api_keys.c.id.in_(live[1:])).values(revoked_at=now)
            )
    return key


async def find_server_key_by_hash(db: Database, key_hash: str) -> str | None:
    """The id of the live server key with this hash (`hash_key`)."""
    async with db.read(snapshot=False) as uow:
        return (
            await uow.conn.execute(
                sa.select(api_keys.c.id).where(
                    api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None)
                )
            )
        ).scalar_one_or_none()


@dataclass(frozen=True)
class ServerKey:
    key_id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None

    def describe(self) -> str:
        state = f"revoked {self.revoked_at:%Y-%m-%d %H:%M:%S}" if self.revoked_at else "active"
        return f"{self.key_id}  {self.name}  created {self.created_at:%Y-%m-%d %H:%M:%S}  {state}"


class KeyNotFound(LookupError):
    """No server key, or more than one, matches what was given."""


async def list_server_keys(db: Database) -> list[ServerKey]:
    async with db.read() as uow:
        rows = (
            await uow.conn.execute(
                sa.select(
                    api_keys.c.id, api_keys.c.name, api_keys.c.created_at, api_keys.c.revoked_at
                ).order_by(api_keys.c.created_at)
            )
        ).all()
    return [ServerKey(*row) for row in rows]


async def revoke_server_key(db: Database, which: str) -> ServerKey:
    """Revoke one server key, named by its id, a unique prefix of its id, its name (when
    unique) or the key itself. Instances stop accepting it within the authenticator's cache
    time (api/auth.KEY_CACHE_S). Revoking a revoked key changes nothing."""
    which = which.strip()
    if not which:
        raise KeyNotFound("Name a key: its id (or a unique prefix of it), its name, or the key")
    condition = (
        api_keys.c.key_hash == hash_key(which)
        if which.startswith(SERVER_KEY_PREFIX)
        else sa.or_(
            api_keys.c.id == which,
            api_keys.c.id.startswith(which, autoescape=True),
            api_keys.c.name == which,
        )
    )
    async with db.transaction() as uow:
        rows = (
            await uow.conn.execute(
                sa.select(
                    api_keys.c.id, api_keys.c.name, api_keys.c.created_at, api_keys.c.revoked_at
                ).where(condition)
            )
        ).all()
        exact = [row for row in rows if row.id == which]
        matches = exact or rows
        if not matches:
            raise KeyNotFound(f"No server key matches {which!r}")
        if len(matches) > 1:
            raise KeyNotFound(
                f"{len(matches)} server keys match {which!r} ("
                + ", ".join(row.id for row in matches)
                + "); give the key id"
            )
        row = matches[0]
        revoked_at = row.revoked_at
        if revoked_at is None:
            revoked_at = datetime.now(UTC)
            await uow.conn.execute(
                sa.update(api_keys).where(api_keys.c.id == row.id).values(revoked_at=revoked_at)
            )
    return ServerKey(row.id, row.name, row.created_at, revoked_at)


async def stored_secret(db: Database, name: str) -> str:
    """A random secret generated once and shared by every instance on this database."""
    async with db.transaction() as uow:
        await uow.conn.execute(
            dialect_insert(uow.conn, settings)
            .values(name=name, value=secrets.token_urlsafe(48))
            .on_conflict_do_nothing(index_elements=["name"])
        )
        return str(
            (
                await uow.conn.execute(sa.select(settings.c.value).where(settings.c.name == name))
            ).scalar_one()
        )
