"""Migrations on both databases: down and up again keeps what a client relies on and the schema
storage/tables.py declares."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import sqlalchemy as sa

from storage.migrate import alembic_config, upgrade_async
from storage.sql import Database
from storage.tables import holds, idempotency_keys, jobs
from storage.writes.idempotency import IdempotencyKey
from storage.writes.writer import BatchWriter
from tests.support import MutableClock


async def _nowhere(events: list[Any]) -> None:
    return None


async def _keyed(db: Database, clock: MutableClock, key: str, body: dict[str, Any]) -> Any:
    writer = BatchWriter(db, clock.now, _nowhere)
    try:

        async def answer(uow: Any) -> tuple[int, dict[str, Any]]:
            return 201, body

        return await writer.run_keyed(answer, IdempotencyKey("mig", key, "fp"), lambda _: None)
    finally:
        await writer.aclose()


async def test_answers_move_back_into_their_claims_when_0010_is_undone(
    database_url: str, clock: MutableClock
) -> None:
    """Downgrading 0010 writes every answer back into its claim (`done`), so the version before
    replays it; upgrading again reads it from there."""
    from alembic import command

    await upgrade_async(database_url)
    db = Database.from_url(database_url, pool_size=2)
    try:
        first = await _keyed(db, clock, "k1", {"n": 1})
    finally:
        await db.dispose()
    assert not first.replayed
    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0009")
    db = Database.from_url(database_url, pool_size=2)
    try:
        async with db.read() as uow:
            tables = await uow.conn.run_sync(lambda c: sa.inspect(c).get_table_names())
            row = (
                await uow.conn.execute(
                    sa.select(
                        idempotency_keys.c.status,
                        idempotency_keys.c.response_status,
                        idempotency_keys.c.response_body,
                    )
                )
            ).one()
    finally:
        await db.dispose()
    assert "idempotency_answers" not in tables
    assert (row.status, row.response_status, json.loads(row.response_body)) == (
        "done",
        201,
        {"n": 1},
    )
    await asyncio.to_thread(command.upgrade, alembic_config(database_url), "head")
    db = Database.from_url(database_url, pool_size=2)
    try:
        again = await _keyed(db, clock, "k1", {"n": "not run"})
    finally:
        await db.dispose()
    assert (again.status, again.body, again.replayed) == (201, {"n": 1}, True)


async def _sweeper_indexes(database_url: str) -> dict[str, set[str]]:
    db = Database.from_url(database_url, pool_size=1)
    try:
        async with db.read() as uow:
            return await uow.conn.run_sync(
                lambda c: {
                    table: {
                        i["name"]
                        for i in sa.inspect(c).get_indexes(table)
                        if i["name"] and i["name"].startswith("ix_")
                    }
                    for table in ("holds", "jobs")
                }
            )
    finally:
        await db.dispose()


async def test_0011_swaps_the_sweepers_indexes_both_ways(database_url: str) -> None:
    """At head the holds and jobs have the indexes storage/tables.py declares, the sweeper's
    partial ones among them; undoing 0011 brings back the (status, expires_at) indexes of every
    hold and job, and upgrading again takes them away."""
    from alembic import command

    declared = {table.name: {i.name for i in table.indexes} for table in (holds, jobs)}
    await upgrade_async(database_url)
    assert await _sweeper_indexes(database_url) == declared
    assert "ix_holds_open_expires" in declared["holds"]
    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0010")
    assert await _sweeper_indexes(database_url) == {
        "holds": {"ix_holds_account", "ix_holds_status_expires"},
        "jobs": {"ix_jobs_account_created", "ix_jobs_status_expires"},
    }
    await asyncio.to_thread(command.upgrade, alembic_config(database_url), "head")
    assert await _sweeper_indexes(database_url) == declared
