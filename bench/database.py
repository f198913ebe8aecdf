"""The benchmarks' PostgreSQL: a scratch database migrated like production, accounts seeded
through storage's own batch write, and the audit both sides must pass."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

DEFAULT_PG_ADMIN = os.environ.get(
    "CREDITSTREAM_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SEED_BALANCE = 10**12


def asyncpg_dsn(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def is_postgres(url: str) -> bool:
    return asyncpg_dsn(url).startswith("postgresql://")


@asynccontextmanager
async def bench_database(admin_dsn: str, url: str | None = None) -> AsyncIterator[str]:
    """A migrated PostgreSQL database: `url` when given, else a scratch one dropped afterwards.

    Yields a plain `postgresql://` DSN (asyncpg's form; creditstream accepts it too)."""
    import asyncpg

    from storage.migrate import upgrade_async

    if url is not None:
        if not is_postgres(url):
            raise ValueError(f"the benchmarks need PostgreSQL, got {url!r}")
        await upgrade_async(asyncpg_dsn(url))
        yield asyncpg_dsn(url)
        return
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(asyncpg_dsn(admin_dsn), timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = asyncpg_dsn(admin_dsn).rsplit("/", 1)[0] + "/" + name
    try:
        await upgrade_async(dsn)
        yield dsn
    finally:
        admin = await asyncpg.connect(asyncpg_dsn(admin_dsn), timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def account_ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:06d}" for i in range(count)]


async def seed_accounts(dsn: str, ids: Sequence[str], balance: int = SEED_BALANCE) -> None:
    """Paid accounts with one never-expiring grant, opened by the engine itself: the domain
    records each grant (entry and event with seq 1) and one operation of the batch writer stores
    them all with set-based writes, so 10,000 take about a second. Paid accounts have no trial
    rules, so every hold takes the same path."""
    from core.account import Account
    from core.events import Event
    from core.model import new_id
    from storage.sql import Database
    from storage.writes.batch import Touches
    from storage.writes.operation import OperationUnitOfWork
    from storage.writes.writer import BatchWriter

    async def open_all(uow: OperationUnitOfWork) -> None:
        now = datetime.now(UTC)
        for account_id in ids:
            account = Account(account_id, balance=0, held=0, seq=0, created_at=now)
            account.add_grant(new_id("grt"), balance, "purchase", now)
            await uow.accounts.insert_new(account)

    async def unheard(events: list[Event]) -> None:
        return None  # nobody is subscribed yet; the journal has the events

    db = Database.from_url(dsn, pool_size=1)
    writer = BatchWriter(db, lambda: datetime.now(UTC), unheard, lanes=1)
    try:
        await writer.run(open_all, Touches(accounts=tuple(ids)))
        await writer.aclose()
        async with db.engine.begin() as conn:
            await conn.exec_driver_sql("ANALYZE")
    finally:
        await db.dispose()


async def audit_database(dsn: str) -> dict[str, Any]:
    """`creditstream audit` on the benchmark's database: both sides must leave a sound ledger."""
    from storage.audit import audit
    from storage.sql import Database

    db = Database.from_url(dsn, pool_size=1)
    try:
        async with db.read() as uow:
            checked, mismatches = await audit(uow.conn)
    finally:
        await db.dispose()
    return {
        "accounts": checked,
        "mismatches": len(mismatches),
        "first": [m.describe() for m in mismatches[:3]],
    }


async def create_server_key(dsn: str) -> str:
    from storage.keys import create_server_key as create
    from storage.sql import Database

    db = Database.from_url(dsn, pool_size=1)
    try:
        return await create(db, "bench")
    finally:
        await db.dispose()
