"""One operation's unit of work inside a batch: core's UnitOfWork ports on the batch's state.

Reads see the batch as the operations before this one left it; the operation works on copies,
so one that is refused leaves nothing behind, and what it saved joins the batch's pending writes
only when `commit` says it succeeded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Generic, TypeVar

from core.account import Account
from core.events import Event
from core.jobs import Job
from core.model import Hold
from core.refunds import Spend
from storage.spend_repository import funding_grant_ids
from storage.writes.batch import (
    Batch,
    PendingWrites,
    copy_account,
    copy_hold,
    copy_job,
    shallow_copy,
    upsert_row,
)

Row = TypeVar("Row", Hold, Job)


class OperationUnitOfWork:
    """core's UnitOfWork for one operation of a batch: reads see the batch as the operations
    before it left it; changes stay here until `commit` hands them to the batch."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self.saved = PendingWrites()  # what the repositories below stage
        self.saved_events: list[Event] = []
        self.after_commit: list[Callable[[], None]] = []
        self.working: dict[str, Account] = {}
        self.created: set[str] = set()

    # The repositories are made on each use, never kept: one kept here would point back at
    # this unit of work, a reference cycle per operation that only the cyclic collector frees,
    # holding the operation's accounts, rows and events until a full collection walks them.

    @property
    def accounts(self) -> _OperationAccounts:
        return _OperationAccounts(self)

    @property
    def holds(self) -> _OperationHolds:
        return _OperationHolds(self)

    @property
    def jobs(self) -> _OperationJobs:
        return _OperationJobs(self)

    @property
    def webhooks(self) -> _OperationWebhooks:
        return _OperationWebhooks(self)

    @property
    def spends(self) -> _OperationSpends:
        return _OperationSpends(self)

    def commit(self) -> None:
        """The operation succeeded: what it saved becomes the batch's state and pending writes."""
        batch, saved = self.batch, self.saved
        for account_id, (account, _) in saved.accounts.items():
            batch.accounts[account_id] = account
            batch.absent.discard(account_id)
            upsert_row(batch.writes.accounts, account_id, account, account_id in self.created)
        states: tuple[tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None], ...] = (
            (batch.writes.grants, saved.grants, None),
            (batch.writes.holds, saved.holds, batch.holds),
            (batch.writes.jobs, saved.jobs, batch.jobs),
        )
        for rows, mine, state in states:
            for row_id, (value, new) in mine.items():
                upsert_row(rows, row_id, value, new)
                if state is not None:
                    state[row_id] = value
        batch.writes.entries.extend(saved.entries)
        batch.writes.events.extend(saved.events)
        for key, response in saved.webhooks.items():
            batch.webhooks[key] = response
            batch.writes.webhooks[key] = response
        self.saved_events.extend(saved.events)
        # what it staged is the batch's now: dropped here, its containers go at once instead of
        # being carried through the collector's generations until the batch ends (a collection
        # of the oldest one walks every object in the process)
        del self.saved, self.working, self.created

    def part(self) -> OperationUnitOfWork:
        """A unit of work for one part of this operation (`POST /v1/batch`), on the same batch:
        a part that fails leaves nothing behind; `adopt` one that succeeded."""
        return OperationUnitOfWork(self.batch)

    def adopt(self, part: OperationUnitOfWork) -> None:
        part.commit()
        self.saved_events.extend(part.saved_events)
        self.after_commit.extend(part.after_commit)

    def save_account(self, account: Account) -> None:
        saved = self.saved
        for grant in account.new_grants:
            upsert_row(saved.grants, grant.grant_id, grant, True)
        for grant in account.touched_grants.values():
            upsert_row(saved.grants, grant.grant_id, grant, False)
        saved.entries.extend(account.new_entries)
        saved.events.extend(account.new_events)
        saved.accounts[account.account_id] = (account, False)
        # emptied, not replaced: fresh containers would live as long as the account does
        account.new_entries.clear()
        account.new_events.clear()
        account.new_grants.clear()
        account.touched_grants.clear()
        account.loaded_seq = account.seq


class _OperationAccounts:
    def __init__(self, uow: OperationUnitOfWork) -> None:
        self.uow = uow

    async def insert_new(self, account: Account) -> bool:
        uow, batch = self.uow, self.uow.batch
        account_id = account.account_id
        if account_id in uow.working:
            return False
        await batch.lock_accounts([account_id])
        if account_id not in batch.absent:
            return False
        uow.working[account_id] = account
        uow.created.add(account_id)
        uow.save_account(account)
        return True

    async def get(self, account_id: str) -> Account | None:
        return await self.lock(account_id)

    async def lock(self, account_id: str) -> Account | None:
        uow = self.uow
        mine = uow.working.get(account_id)
        if mine is not None:
            return mine
        batch = uow.batch
        current = batch.accounts.get(account_id)  # most often locked with the batch's load
        if current is None:
            await batch.lock_accounts([account_id])
            current = batch.accounts.get(account_id)
            if current is None:
                return None
        account = uow.working[account_id] = copy_account(current)
        return account

    async def save(self, account: Account) -> None:
        if account.changed or account.touched_grants or account.account_id in self.uow.created:
            self.uow.save_account(account)

    async def with_due_grants(self, now: datetime, limit: int) -> list[str]:
        raise NotImplementedError("the sweeper finds due grants with a read, not in a batch")


class _StagedRows(Generic[Row]):
    """Holds or jobs for one operation: its own saved rows first, then the batch's, as copies."""

    def __init__(
        self,
        staged: dict[str, tuple[Row, bool]],
        key: Callable[[Row], str],
        copy: Callable[[Row], Row],
        from_batch: Callable[[str], Awaitable[Row | None]],
    ) -> None:
        self.staged: dict[str, tuple[Row, bool]] = staged
        self.key: Callable[[Row], str] = key
        self.copy: Callable[[Row], Row] = copy
        self.from_batch: Callable[[str], Awaitable[Row | None]] = from_batch

    async def add(self, row: Row) -> None:
        upsert_row(self.staged, self.key(row), row, True)

    async def get(self, row_id: str) -> Row | None:
        mine = self.staged.get(row_id)
        if mine is not None:
            return self.copy(mine[0])
        found = await self.from_batch(row_id)
        return None if found is None else self.copy(found)

    async def save(self, row: Row, expected_status: str) -> None:
        # the account's lock, held since the row was read, keeps its status as read
        upsert_row(self.staged, self.key(row), row, False)

    async def due(self, now: datetime, limit: int) -> list[str]:
        raise NotImplementedError("the sweeper finds what is due with a read, not in a batch")


def _hold_id(hold: Hold) -> str:
    return hold.hold_id


def _job_id(job: Job) -> str:
    return job.job_id


class _OperationHolds(_StagedRows[Hold]):
    def __init__(self, uow: OperationUnitOfWork) -> None:
        super().__init__(uow.saved.holds, _hold_id, copy_hold, uow.batch.hold)


class _OperationJobs(_StagedRows[Job]):
    def __init__(self, uow: OperationUnitOfWork) -> None:
        super().__init__(uow.saved.jobs, _job_id, copy_job, uow.batch.job)
        self.uow = uow

    async def by_task(self, provider: str, task_id: str) -> Job | None:
        for job, _ in self.staged.values():
            if job.provider == provider and job.provider_task_id == task_id:
                return copy_job(job)
        found = await self.uow.batch.job_by_task(provider, task_id)
        return None if found is None else copy_job(found)


class _OperationSpends:
    def __init__(self, uow: OperationUnitOfWork) -> None:
        self.uow = uow

    async def find(self, spend_id: str, kind: str) -> Spend | None:
        """The stored spend with what the batch and this operation wrote since: their refunds,
        and their grants' current state."""
        stored, funders = await self.uow.batch.spend(spend_id, kind)
        batch, saved = self.uow.batch.writes, self.uow.saved
        lines = stored + [e for e in (*batch.entries, *saved.entries) if e.op_id == spend_id]
        current = {g.grant_id: g for g in funders}
        current.update((k, g) for k, (g, _) in (*batch.grants.items(), *saved.grants.items()))
        grants = [shallow_copy(current[i]) for i in funding_grant_ids(lines, kind) if i in current]
        return Spend.from_journal(spend_id, kind, lines, grants)


class _OperationWebhooks:
    def __init__(self, uow: OperationUnitOfWork) -> None:
        self.uow = uow

    async def processed(self, provider: str, event_id: str) -> dict[str, Any] | None:
        mine = self.uow.saved.webhooks.get((provider, event_id))
        if mine is not None:
            return mine
        return await self.uow.batch.webhook_response(provider, event_id)

    async def record(self, provider: str, event_id: str, response: dict[str, Any]) -> None:
        self.uow.saved.webhooks[(provider, event_id)] = response
