"""What a database failure means to a caller: the storage adapter's errors, and the driver's
errors of a server gone, going away or demoted turned into `DatabaseUnavailable` (a 503 and a
retry), with the broken connection discarded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from core.ports import ServiceUnavailable

# SQLSTATE classes of a connection that is gone or a server that is going away
UNAVAILABLE_CLASSES = ("08", "57")
# a write on a server that is no longer the primary (a Patroni switchover demoted it under a
# connection that survived): that connection is discarded and the next one finds the new primary
READ_ONLY_SQLSTATE = "25006"


class StorageError(Exception):
    """Base of the storage adapter's own errors."""


class DatabaseUnavailable(StorageError, ServiceUnavailable):
    """The database could not be reached or answered too slowly; nothing was committed."""


@asynccontextmanager
async def discarded_if_broken(conn: AsyncConnection) -> AsyncIterator[None]:
    """A write refused as read-only means this connection's server is a standby now, and a
    driver error of asyncpg's own means its protocol state is broken: either way the connection
    is invalidated (never reused) and the caller gets `DatabaseUnavailable`."""
    try:
        yield
    except DBAPIError as exc:
        demoted = _sqlstate(exc) == READ_ONLY_SQLSTATE
        if not demoted and not _caused_by(exc, asyncpg.InternalClientError):
            raise
        await conn.invalidate()
        what = "the database is not the primary" if demoted else "database connection broken"
        raise DatabaseUnavailable(f"{what}: {_first_line(exc)}") from exc


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    current: BaseException | None = exc
    for _ in range(4):
        if current is None:
            return False
        if isinstance(current, kind):
            return True
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return False


@asynccontextmanager
async def unavailable_on_connection_errors() -> AsyncIterator[None]:
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailable(f"database unavailable: {_first_line(exc)}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise DatabaseUnavailable(f"database connection lost: {_first_line(exc)}") from exc
        if _sqlstate(exc)[:2] in UNAVAILABLE_CLASSES:
            # e.g. 57P03 "the database system is shutting down" while a connection is opened
            # during a switchover: SQLAlchemy reports it as a plain DBAPIError
            raise DatabaseUnavailable(f"database unavailable: {_first_line(exc)}") from exc
        raise
    except (TimeoutError, OSError) as exc:
        raise DatabaseUnavailable(f"database unreachable: {exc!r}") from exc


def _sqlstate(exc: BaseException) -> str:
    """The SQLSTATE of a driver error, however SQLAlchemy wrapped it ("" when there is none)."""
    current: BaseException | None = exc
    for _ in range(4):
        if current is None:
            break
        state = getattr(current, "sqlstate", None)
        if isinstance(state, str) and state:
            return state
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return ""


def _first_line(exc: Exception) -> str:
    return str(getattr(exc, "orig", exc)).splitlines()[0][:200] if str(exc) else type(exc).__name__
