"""The transaction a batch runs in, and the reads and writes it needs, per database.

`batch_session(db)` opens one write transaction and yields a `BatchSession`: on PostgreSQL the
batch's own asyncpg statements (storage/writes/batch_pg.py), elsewhere SQLAlchemy Core
(storage/writes/batch_sql.py). Errors leave it as the rest of storage raises them: a lost or refused
connection as `DatabaseUnavailable`, a constraint as SQLAlchemy's `IntegrityError`, any other
database error as `DBAPIError` (its `orig.sqlstate` tells a deadlock from the rest).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Protocol

import asyncpg
from sqlalchemy import exc as sa_exc

from storage.connection_errors import DatabaseUnavailable
from storage.sql import Database
from storage.writes.batch import BatchReads, PendingWrites
from storage.writes.batch_pg import PgBatchSession
from storage.writes.batch_sql import SqlBatchSession
from storage.writes.begun import BegunConnections
from storage.writes.committed_accounts import Version
from storage.writes.idempotency import IdempotencyKey, KeyId, StoredResponse


class BatchSession(BatchReads, Protocol):
    """What a batch reads (BatchReads), and its keys and writes."""

    def lock_with_claim(self, account_ids: Sequence[str]) -> None:
        """The accounts (in id order) the batch will lock once its keys are claimed, when it
        names no hold or job: where the database allows, the claim's own statement locks them
        and reads their live grants, and `lock_accounts` hands them out without a round trip."""

    def claim_with_write(self, keys: list[IdempotencyKey]) -> None:
        """Claim, with the batch's write (flush), each of these keys the batch answers; one
        claimed already fails the write (a batch on remembered accounts: committed_accounts.py)."""

    async def claim(self, ordered: list[IdempotencyKey], now: datetime) -> list[KeyId]:
        """INSERT the keys in this order unless they exist; the ones inserted."""

    async def stored(self, key_ids: list[KeyId]) -> dict[KeyId, StoredResponse]: ...

    async def record(self, responses: dict[KeyId, tuple[int, Any]]) -> None:
        """Store the keys' answers, at the latest with the batch's rows (flush)."""

    async def unclaim(self, key_ids: Iterable[KeyId]) -> None: ...

    def expect(self, versions: dict[str, Version]) -> None:
        """The accounts the batch applied on as remembered (storage/writes/committed_accounts.py)
        rather than locked: flush locks them and raises StaleAccounts unless each row is still
        the version given."""

    async def flush(self, writes: PendingWrites, now: datetime) -> dict[str, Version]:
        """Write what the batch saved; the versions of the account rows written."""


@asynccontextmanager
async def batch_session(
    db: Database, connections: BegunConnections | None = None, one_statement: bool = False
) -> AsyncIterator[BatchSession]:
    """One write transaction; commits when the block ends without an exception. On PostgreSQL
    it runs on `connections` (a lane's: it may start on a connection whose transaction is
    already begun); without them, on connections of its own, given back at its end.
    `one_statement`: the block writes with one statement, which may run as its own
    transaction (storage/writes/begun.py)."""
    if db.dialect != "postgresql":
        async with db.transaction() as uow:
            yield SqlBatchSession(uow.conn)
        return
    lane = connections or BegunConnections(db)
    try:
        async with lane.transaction(one_statement) as driver:
            yield PgBatchSession(driver)
    finally:
        if connections is None:
            await lane.release()


# what, raised inside an operation, means the transaction itself is in doubt (the batch goes
# again) rather than that one operation failed
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.SQLAlchemyError,
    DatabaseUnavailable,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
)
