"""Server API keys (stored as SHA-256 hashes) and generated secrets kept in the database."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

import sqlalchemy as sa

from core.model import new_id
from storage.repositories import dialect_insert
from storage.sql import Database
from storage.tables import api_keys, settings

SERVER_KEY_PREFIX = "sk_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_server_key(db: Database, name: str) -> str:
    """A new key, returned once in plain text; only its hash is stored."""
    key = SERVER_KEY_PREFIX + secrets.token_urlsafe(32)
    async with db.transaction() as uow:
        await uow.conn.execute(sa.insert(api_keys).values(
            id=new_id("key"), name=name, key_hash=hash_key(key), created_at=datetime.now(UTC)))
    return key


async def find_server_key(db: Database, key: str) -> str | None:
    """The key's id when it is a live server key."""
    async with db.read() as uow:
        return (await uow.conn.execute(
            sa.select(api_keys.c.id).where(api_keys.c.key_hash == hash_key(key),
                                           api_keys.c.revoked_at.is_(None))
        )).scalar_one_or_none()


async def stored_secret(db: Database, name: str) -> str:
    """A random secret generated once and shared by every instance on this database."""
    async with db.transaction() as uow:
        await uow.conn.execute(
            dialect_insert(uow.conn, settings)
            .values(name=name, value=secrets.token_urlsafe(48))
            .on_conflict_do_nothing(index_elements=["name"]))
        return str((await uow.conn.execute(
            sa.select(settings.c.value).where(settings.c.name == name))).scalar_one())
