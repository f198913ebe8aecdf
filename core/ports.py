"""The interfaces core needs from the outside world; storage/ and realtime/ implement them."""

from __future__ import annotations

from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Protocol

from core.account import Account
from core.jobs import Job
from core.model import Hold
from core.refunds import Spend


class Clock(Protocol):
    def now(self) -> datetime: ...


# The time of the transaction an operation runs in, set by whoever runs one (a group-commit
# batch): every operation of one transaction is stamped alike, as PostgreSQL's now() stamps a
# transaction, so a batch's rows share their timestamps and each travels to the database once.
TRANSACTION_TIME: ContextVar[datetime | None] = ContextVar("transaction_time", default=None)


class SystemClock:
    def now(self) -> datetime:
        return TRANSACTION_TIME.get() or datetime.now(UTC)


class AccountRepository(Protocol):
    async def insert_new(self, account: Account) -> bool:
        """Persist a just-opened account; False (and nothing written) when the id exists."""

    async def get(self, account_id: str) -> Account | None:
        """A read-only snapshot, without grants."""

    async def lock(self, account_id: str) -> Account | None:
        """The account with its live grants, locked until the transaction ends."""

    async def save(self, account: Account) -> None:
        """Write what changed: the row (guarded by its seq), grants, entries and events."""

    async def with_due_grants(self, now: datetime, limit: int) -> list[str]: ...


class HoldRepository(Protocol):
    async def add(self, hold: Hold) -> None: ...

    async def get(self, hold_id: str) -> Hold | None: ...

    async def save(self, hold: Hold, expected_status: str) -> None:
        """Update a hold only if it is still in `expected_status`."""

    async def due(self, now: datetime, limit: int) -> list[str]: ...


class JobRepository(Protocol):
    async def add(self, job: Job) -> None: ...

    async def get(self, job_id: str) -> Job | None: ...

    async def by_task(self, provider: str, task_id: str) -> Job | None: ...

    async def save(self, job: Job, expected_status: str) -> None: ...

    async def due(self, now: datetime, limit: int) -> list[str]: ...


class SpendRepository(Protocol):
    async def find(self, spend_id: str, kind: str) -> Spend | None:
        """The `kind` ("charge" or "capture") journal line of operation `spend_id` (a charge_id
        or a hold_id), the refunds of it so far and the grants its funding names, as this
        transaction sees them; None if there is no such spend."""


class UnitOfWork(Protocol):
    """One database transaction; the caller commits by leaving its context without an error."""

    @property
    def accounts(self) -> AccountRepository: ...

    @property
    def holds(self) -> HoldRepository: ...

    @property
    def jobs(self) -> JobRepository: ...


class RefundUnitOfWork(UnitOfWork, Protocol):
    """A unit of work that can also find a spend, for refunds."""

    @property
    def spends(self) -> SpendRepository: ...


class ObjectStore(Protocol):
    """Where generation results are kept (S3/R2 via boto3, or a local directory)."""

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        """Store the object and return its public URL. Raises StorageFailed."""

    async def delete(self, key: str) -> None: ...


class ServiceUnavailable(Exception):
    """A service behind a port (the database) could not be reached or answered too slowly;
    nothing was changed, and retrying shortly is the right advice."""


class StorageFailed(Exception):
    """The object store could not keep a result; the job fails and its hold is released."""
