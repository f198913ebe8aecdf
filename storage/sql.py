"""The SQL unit of work on an AsyncEngine, for PostgreSQL (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import asyncpg
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from core.events import Event
from storage.account_repository import SqlAccounts
from storage.connection_errors import (
    READ_ONLY_SQLSTATE,
    UNAVAILABLE_CLASSES,
    DatabaseUnavailable,
    discarded_if_broken,
    unavailable_on_connection_errors,
)
from storage.database_url import DEFAULT_DATABASE_URL as DEFAULT_DATABASE_URL  # re-exported
from storage.database_url import (
    DatabaseSetupError,
    check_supported,
    pooler_connect_args,
    split_pooler,
)
from storage.database_url import normalise_url as normalise_url  # re-exported
from storage.hold_repository import SqlHolds
from storage.job_repository import SqlJobs
from storage.json_columns import json_loads
from storage.spend_repository import SqlSpends
from storage.standby import PRIMARY_POSITION, Standby, Standbys

T = TypeVar("T")


class SqlUnitOfWork:
    """One transaction. Repositories share its connection; events saved are listed for publishing."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.saved_events: list[Event] = []
        self.after_commit: list[Callable[[], None]] = []  # e.g. hand a new job to its provider
        self.accounts = SqlAccounts(conn, self.saved_events)
        self.holds = SqlHolds(conn)
        self.jobs = SqlJobs(conn)
        self.spends = SqlSpends(conn)


class ConnectionKeeper(Protocol):
    """Something that keeps pooled connections checked out between its uses."""

    async def release(self) -> None:
        """Give them all back to the pool."""


class Database:
    def __init__(self, engine: AsyncEngine, pooler: str | None = None) -> None:
        self.engine = engine
        self._keepers: weakref.WeakSet[ConnectionKeeper] = weakref.WeakSet()
        self.standbys: Standbys | None = None  # CREDITSTREAM_DATABASE_READ_URL
        # behind a transaction pooler every statement runs inside a transaction: outside one,
        # the pooler may hand the next protocol message to another server connection
        self.pooler = pooler
        # the same pool; SQLite keeps its own BEGIN handling
        self._autocommit = (
            engine
            if engine.dialect.name == "sqlite" or pooler
            else engine.execution_options(isolation_level="AUTOCOMMIT")
        )

    @classmethod
    def from_url(cls, url: str, pool_size: int = 10, read_urls: tuple[str, ...] = ()) -> Database:
        check_supported(url)  # one clear line for mysql://…, not "No module named 'MySQLdb'"
        url, pooler = split_pooler(normalise_url(url))
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            if read_urls:
                raise DatabaseSetupError(
                    "CREDITSTREAM_DATABASE_READ_URL names standbys, which need PostgreSQL: "
                    "CREDITSTREAM_DATABASE_URL is SQLite (unset one, or use PostgreSQL)"
                )
            return cls(_sqlite_engine(url))
        engine = create_async_engine(
            # no pre-ping: a dead connection fails its statement and is discarded, which costs
            # one 503 after an outage instead of a round trip on every checkout (a multi-host
            # URL's next connection then finds the new primary by target_session_attrs)
            url,
            pool_size=pool_size,
            max_overflow=pool_size * 2,
            pool_timeout=5,
            # a dead database must produce a quick 503, not a request that hangs
            connect_args={"timeout": 3, "command_timeout": 15, **pooler_connect_args(pooler)},
            json_deserializer=json_loads,
        )
        db = cls(engine, pooler)
        if read_urls:
            standbys = [Standby.from_url(read_url, pool_size) for read_url in read_urls]
            db.standbys = Standbys(standbys, db._primary_position)
        return db

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlUnitOfWork]:
        """A write transaction; commits when the block ends without an exception."""
        async with unavailable_on_connection_errors():
            async with self.engine.connect() as conn, discarded_if_broken(conn):
                await conn.execution_options(creditstream_write=True)
                async with conn.begin():
                    yield SqlUnitOfWork(conn)

    @asynccontextmanager
    async def read(self, snapshot: bool = True) -> AsyncIterator[SqlUnitOfWork]:
        """A read; `snapshot=False` for a single statement, which then needs no transaction
        around it on PostgreSQL (one round trip instead of BEGIN, the query and ROLLBACK)."""
        engine = self.engine if snapshot else self._autocommit
        async with unavailable_on_connection_errors():
            async with engine.connect() as conn, discarded_if_broken(conn):
                async with conn.begin():
                    yield SqlUnitOfWork(conn)

    @asynccontextmanager
    async def driver(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection's own asyncpg connection (PostgreSQL only), for the statements
        that SQLAlchemy's layers would cost more than they run. Its errors leave as the rest of
        storage raises them: a lost or refused connection as `DatabaseUnavailable`, a
        constraint as `IntegrityError`, any other as `DBAPIError` (`orig.sqlstate` tells a
        deadlock from the rest)."""
        async with unavailable_on_connection_errors():
            async with self.engine.connect() as conn:
                driver = await driver_of(conn)
                async with driver_errors(conn):
                    if self.pooler and not driver.is_in_transaction():
                        async with driver.transaction():
                            yield driver
                    else:
                        yield driver

    async def standby_read(
        self, read: Callable[[SqlUnitOfWork], Awaitable[T]], snapshot: bool = True
    ) -> T:
        """`read(uow)` on a standby that has replayed every commit acknowledged before this call
        (on any instance), else on the primary; as `read()` without standbys. `read` must only
        read: a standby failing under it makes the primary run it again."""

        async def on_primary() -> T:
            async with self.read(snapshot) as uow:
                return await read(uow)

        if self.standbys is None:
            return await on_primary()
        async with unavailable_on_connection_errors():  # the primary's, as `read()` raises them
            return await self.standbys.read(
                lambda conn: read(SqlUnitOfWork(conn)), snapshot, on_primary
            )

    async def standby_driver(self, read: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """`read(connection)` on a caught-up standby's asyncpg connection, else the primary's
        (PostgreSQL only; see `standby_read` and `driver`)."""

        async def on_primary() -> T:
            async with self.driver() as driver:
                return await read(driver)

        if self.standbys is None:
            return await on_primary()
        async with unavailable_on_connection_errors():
            return await self.standbys.driver(read, on_primary)

    async def _primary_position(self) -> int:
        async with self.driver() as driver:
            return int(await driver.fetchval(PRIMARY_POSITION))

    async def ping(self) -> None:
        async with self.read() as uow:
            await uow.conn.execute(sa.text("SELECT 1"))

    def keeps_connections(self, keeper: ConnectionKeeper) -> None:
        """`dispose()` has `keeper` give its connections back first (a write lane's, kept
        between batches: storage/writes/begun.py), whether or not its owner was closed."""
        self._keepers.add(keeper)

    async def dispose(self) -> None:
        for keeper in list(self._keepers):
            await keeper.release()
        if self.standbys is not None:
            await self.standbys.dispose()
        await self.engine.dispose()


async def driver_of(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under a checked-out SQLAlchemy connection."""
    raw = await conn.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    return driver


@asynccontextmanager
async def driver_errors(conn: AsyncConnection) -> AsyncIterator[None]:
    """Errors of statements sent on `conn`'s asyncpg connection, as the rest of storage raises
    them: a lost or refused connection as `DatabaseUnavailable` (and `conn` invalidated, so
    the pool never hands it out again), a constraint as `IntegrityError`, any other database
    error as `DBAPIError`."""
    try:
        yield
    except (
        asyncpg.InterfaceError,
        # the driver's own state is broken ("cannot switch to state …; another
        # operation is in progress", seen after a failover): never reuse it
        asyncpg.InternalClientError,
        OSError,
        TimeoutError,
    ) as exc:
        await conn.invalidate()
        raise DatabaseUnavailable(f"database connection lost: {exc!r}"[:240]) from exc
    except asyncpg.PostgresError as exc:
        state = exc.sqlstate or ""
        if state[:2] in UNAVAILABLE_CLASSES or state == READ_ONLY_SQLSTATE:
            await conn.invalidate()
            raise DatabaseUnavailable(f"database unavailable: {exc}"[:240]) from exc
        if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
            raise IntegrityError("driver", None, exc) from exc
        raise DBAPIError("driver", None, exc) from exc


def _sqlite_engine(url: str) -> AsyncEngine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, pool_size=5, max_overflow=10, pool_timeout=30)

    @sa_event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # let SQLAlchemy, not the driver, emit BEGIN, so writes can say BEGIN IMMEDIATE
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "busy_timeout=30000",
            "foreign_keys=ON",
            "synchronous=NORMAL",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @sa_event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # a write takes the write lock up front: concurrent writers queue on busy_timeout
        # instead of failing with "database is locked" when upgrading a read lock
        write = conn.get_execution_options().get("creditstream_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine
