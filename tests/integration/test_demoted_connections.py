"""A connection whose server stopped being the primary (a Patroni switchover demotes it under
open connections) is refused its writes with SQLSTATE 25006: the caller gets DatabaseUnavailable
(a 503, which clients retry) and the connection is discarded, so the next one, through a
multi-host URL with target_session_attrs=read-write, finds the new primary. Here the refusal is
made with a read-only session on the test's PostgreSQL, the same error a standby gives."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from storage.connection_errors import DatabaseUnavailable
from storage.migrate import upgrade_async
from storage.sql import Database

WRITE = "INSERT INTO alembic_version (version_num) VALUES ('demoted')"


async def test_a_write_refused_as_read_only_is_unavailable_and_discards_the_connection(
    pg_url: str,
) -> None:
    await upgrade_async(pg_url)
    db = Database.from_url(pg_url, pool_size=1)
    try:
        async with db.transaction() as uow:  # from now on this session refuses writes
            await uow.conn.execute(sa.text("SET default_transaction_read_only = on"))
        with pytest.raises(DatabaseUnavailable, match="not the primary"):
            async with db.transaction() as uow:
                await uow.conn.execute(sa.text(WRITE))
        # the read-only session was not given back to the pool: the next write succeeds
        async with db.transaction() as uow:
            await uow.conn.execute(sa.text(WRITE))

        with pytest.raises(DatabaseUnavailable):
            async with db.driver() as driver:
                await driver.execute("SET default_transaction_read_only = on")
                await driver.execute(WRITE.replace("demoted", "demoted-2"))
        async with db.driver() as driver:
            await driver.execute(WRITE.replace("demoted", "demoted-3"))
    finally:
        await db.dispose()
