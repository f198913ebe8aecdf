"""Alembic environment: runs migrations on the async engine named by the caller."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa
from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from storage.database_url import normalise_url, pooler_connect_args, split_pooler
from storage.tables import metadata

target_metadata = metadata
MIGRATION_LOCK_ID = 7_270_013  # replicas starting together migrate one at a time


def _run(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})"))
        context.run_migrations()


async def _run_async(url: str) -> None:
    # a multi-host URL (target_session_attrs=read-write) migrates whichever node is the primary
    plain, pooler = split_pooler(url)
    engine = create_async_engine(plain, connect_args=pooler_connect_args(pooler))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations() -> None:
    url = normalise_url(context.config.get_main_option("sqlalchemy.url") or "")
    if context.is_offline_mode():
        context.configure(
            url=split_pooler(url)[0], target_metadata=target_metadata, literal_binds=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_async(url))


run_migrations()
