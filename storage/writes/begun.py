"""A write lane's PostgreSQL connections, kept with their next transaction already begun.

A batch's transaction costs a BEGIN and a COMMIT, a round trip each. A batch that commits sends
`COMMIT; BEGIN` as one message and its connection stays with the lane, so the lane's next batch
starts on it with its transaction open: a round trip and a pool checkout fewer per batch, for a
lane under load and for a lone caller's next request alike. A transaction begun and not yet used
has taken no snapshot, lock or transaction id, so it holds nothing back (vacuum included). The
lane gives its kept connections back, their empty transaction rolled back, once it has been idle
(nothing waiting, no batch of its own in flight) for `LINGER_S` (storage/writes/writer.py). A
connection never goes back to the pool inside a transaction.

A batch that writes with one statement (on remembered accounts its write is all it sends, but for
the plain reads an operation may ask first, a refund's lines: storage/writes/committed_accounts.py)
needs no BEGIN or COMMIT at all: on a kept connection with no transaction open, the write runs as
its own transaction, committed before its answer comes back: one round trip per batch. A read
before it sees the latest commits, as it would inside a READ COMMITTED transaction that has not
locked anything yet. Its connection is kept with no transaction begun, for the next such batch; a
batch of several statements on it sends its BEGIN first."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.connection_errors import unavailable_on_connection_errors
from storage.sql import Database, driver_errors, driver_of

log = logging.getLogger("creditstream.writer")
Held = tuple[AsyncConnection, asyncpg.Connection]


# how long an idle lane keeps its begun connections: a caller's next request after its answer
# comes within it, while no begun transaction outlives a burst by more than this
LINGER_S = 0.1


class BegunConnections:
    """`transaction()` runs one batch's transaction and keeps its connection, begun, for the
    next; `release()` gives back what is kept."""

    def __init__(self, db: Database) -> None:
        self._db = db
        db.keeps_connections(self)  # given back when the database is disposed, at the latest
        self._kept: list[Held] = []
        self._giving_back: set[asyncio.Future[None]] = set()
        self.reused = 0  # transactions that started on a kept connection, for tests and benches

    @property
    def kept(self) -> int:
        return len(self._kept)

    @asynccontextmanager
    async def transaction(self, one_statement: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """One write transaction on a kept connection, or on a new one; commits when the block
        ends without an exception. `one_statement`: the block writes with one statement, which
        then runs as its own transaction, unless behind a transaction pooler (outside a
        transaction it may hand asyncpg's prepare and execute to two server connections).
        Errors leave as `Database.driver()` raises them."""
        one_statement = one_statement and not self._db.pooler
        async with unavailable_on_connection_errors():
            driver: asyncpg.Connection | None = None
            if self._kept:
                conn, driver = self._kept.pop()
                self.reused += 1
            else:
                conn = await self._db.engine.connect()
            kept = False
            try:
                async with driver_errors(conn):
                    if driver is None:
                        driver = await driver_of(conn)
                    begun = driver.is_in_transaction()
                    if not (begun or one_statement):
                        await driver.execute("BEGIN")
                        begun = True
                    try:
                        yield driver
                    except BaseException:
                        await _roll_back(conn, driver)
                        raise
                    if begun:
                        # the next batch on remembered accounts is most likely one statement too
                        await driver.execute("COMMIT" if one_statement else "COMMIT; BEGIN")
                    self._kept.append((conn, driver))
                    kept = True
            finally:
                if not kept:  # shielded, as SQLAlchemy's own exit: a cancellation mid-way
                    await asyncio.shield(_give_back(conn, driver))  # would leak it

    async def release(self) -> None:
        """Roll back the kept connections' empty transactions and give them back to the pool.
        A cancellation does not stop it half-way (a lane stopped while it gives them back):
        what it began is finished, and a later call waits for that."""
        if self._kept:
            kept, self._kept = self._kept, []
            task = asyncio.ensure_future(_give_all_back(kept))
            self._giving_back.add(task)
            task.add_done_callback(self._giving_back.discard)
        if self._giving_back:
            await asyncio.shield(asyncio.gather(*self._giving_back))


async def _give_all_back(kept: list[Held]) -> None:
    for conn, driver in kept:
        try:
            await _roll_back(conn, driver)
            await _give_back(conn, driver)
        except Exception:  # one that cannot be given back must not keep the others
            log.exception("giving a kept write connection back failed")


async def _roll_back(conn: AsyncConnection, driver: asyncpg.Connection) -> None:
    if conn.invalidated or driver.is_closed() or not driver.is_in_transaction():
        return
    try:
        await driver.execute("ROLLBACK")
    except Exception as exc:  # a connection that cannot say ROLLBACK is not given out again
        log.info("a write connection could not roll back (%r); discarding it", exc)
        await conn.invalidate()


async def _give_back(conn: AsyncConnection, driver: asyncpg.Connection | None) -> None:
    if driver is not None and not conn.invalidated and driver.is_in_transaction():
        await conn.invalidate()  # never a connection inside a transaction to the pool's next user
    await conn.close()
