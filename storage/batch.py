"""One group-commit transaction, in memory.

The accounts a batch touches are locked in one statement, in id order, and loaded with their live
grants; the holds and jobs it names are read in bulk once their accounts are locked. Each
operation then runs core's use cases against that state through its own unit of work
(`OperationUnitOfWork`): it works on copies, so an operation that is refused leaves nothing behind,
and what it saved joins the batch's pending writes only when it succeeds. Anything not loaded up
front is read on demand, so every use case runs here unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol, TypeVar

from core.account import Account
from core.events import Event
from core.jobs import Job
from core.model import Entry, Grant, Hold
from core.refunds import Spend
from storage.repositories import funding_grant_ids, storable_key

T = TypeVar("T")


@dataclass(frozen=True)
class Touches:
    """What an operation will touch, so a batch can load it in bulk before any operation runs.
    Only a hint: whatever is missing is loaded when the operation asks for it."""

    accounts: tuple[str, ...] = ()
    holds: tuple[str, ...] = ()
    jobs: tuple[str, ...] = ()


NOTHING = Touches()


@dataclass
class PendingWrites:
    """Everything the batch's successful operations saved, latest state per row."""

    accounts: dict[str, tuple[Account, bool]] = field(default_factory=dict)  # (state, is new)
    grants: dict[str, tuple[Grant, bool]] = field(default_factory=dict)
    holds: dict[str, tuple[Hold, bool]] = field(default_factory=dict)
    jobs: dict[str, tuple[Job, bool]] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    webhooks: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def _upsert(rows: dict[str, tuple[Any, bool]], row_id: str, value: Any, new: bool) -> None:
    """Keep the latest state of a row; a row inserted earlier in the batch stays an insert."""
    known = rows.get(row_id)
    rows[row_id] = (value, new or (known is not None and known[1]))


class BatchReads(Protocol):
    """What a batch reads inside its transaction (storage/batch_session.py implements it)."""

    async def lock_accounts(self, account_ids: Sequence[str], hold_ids: Sequence[str] = (),
                            job_ids: Sequence[str] = ()) -> list[Account]:
        """Lock these accounts and those of the holds and jobs named, in id order; return those
        that exist, with their live grants."""

    async def holds(self, hold_ids: Sequence[str]) -> list[Hold]: ...

    async def jobs(self, job_ids: Sequence[str]) -> list[Job]: ...

    async def job_by_task(self, provider: str, task_id: str) -> Job | None: ...

    async def webhook_response(self, provider: str, event_id: str) -> dict[str, Any] | None: ...

    async def spend(self, spend_id: str, kind: str) -> tuple[list[Entry], list[Grant]]:
        """A spend's journal lines (the spend and its refunds) and the grants that funded it."""


class Batch:
    """The state one transaction has locked and loaded, shared by its operations in turn."""

    def __init__(self, reads: BatchReads) -> None:
        self.reads = reads
        self.accounts: dict[str, Account] = {}  # locked by this transaction
        self.absent: set[str] = set()  # looked up under this transaction: no such account
        self.holds: dict[str, Hold] = {}  # read after their account was locked
        self.jobs: dict[str, Job] = {}
        self.webhooks: dict[tuple[str, str], dict[str, Any] | None] = {}
        self.spends: dict[tuple[str, str], tuple[list[Entry], list[Grant]]] = {}
        self.writes = PendingWrites()

    async def load(self, touches: Iterable[Touches]) -> None:
        """Lock and load, in bulk, everything the operations said they will touch."""
        account_ids: set[str] = set()
        hold_ids: set[str] = set()
        job_ids: set[str] = set()
        for touch in touches:
            account_ids.update(touch.accounts)
            hold_ids.update(h for h in touch.holds if storable_key(h))
            job_ids.update(j for j in touch.jobs if storable_key(j))
        await self.lock_accounts(account_ids, sorted(hold_ids), sorted(job_ids))
        if hold_ids or job_ids:
            # read again now that their accounts are locked: until then they could change
            self._keep(await self._read_holds(hold_ids), await self._read_jobs(job_ids))

    async def lock_accounts(self, account_ids: Iterable[str], hold_ids: Sequence[str] = (),
                            job_ids: Sequence[str] = ()) -> None:
        wanted = sorted({a for a in account_ids if a not in self.accounts and a not in self.absent
                         and storable_key(a)})
        if not (wanted or hold_ids or job_ids):
            return
        found = {a.account_id: a for a in await self.reads.lock_accounts(wanted, hold_ids, job_ids)
                 if a.account_id not in self.accounts}
        self.accounts.update(found)
        self.absent.update(a for a in wanted if a not in found)

    async def hold(self, hold_id: str) -> Hold | None:
        if hold_id in self.holds:
            return self.holds[hold_id]
        if not storable_key(hold_id):
            return None
        found = await self._read_holds([hold_id])
        self._keep(found, [])
        return found[0] if found else None

    async def job(self, job_id: str) -> Job | None:
        if job_id in self.jobs:
            return self.jobs[job_id]
        if not storable_key(job_id):
            return None
        found = await self._read_jobs([job_id])
        self._keep([], found)
        return found[0] if found else None

    async def job_by_task(self, provider: str, task_id: str) -> Job | None:
        for job in self.jobs.values():
            if job.provider == provider and job.provider_task_id == task_id:
                return job
        if not (storable_key(provider) and storable_key(task_id)):
            return None
        return await self.reads.job_by_task(provider, task_id)

    async def webhook_response(self, provider: str, event_id: str) -> dict[str, Any] | None:
        """The stored answer to a payment event already processed, or None if it is new."""
        key = (provider, event_id)
        if key not in self.webhooks:
            self.webhooks[key] = await self.reads.webhook_response(provider, event_id)
        return self.webhooks[key]

    async def spend(self, spend_id: str, kind: str) -> tuple[list[Entry], list[Grant]]:
        """As stored, without what this batch has changed since (the operation adds that)."""
        if (spend_id, kind) in self.spends:
            return self.spends[(spend_id, kind)]
        found = await self.reads.spend(spend_id, kind)
        lines, _ = found
        if lines and lines[0].account_id in self.accounts:  # read under its account's lock
            self.spends[(spend_id, kind)] = found
        return found

    def _keep(self, found_holds: Iterable[Hold], found_jobs: Iterable[Job]) -> None:
        # only rows whose account this transaction has locked can be trusted for the batch
        for hold in found_holds:
            if hold.account_id in self.accounts:
                self.holds[hold.hold_id] = hold
        for job in found_jobs:
            if job.account_id in self.accounts:
                self.jobs[job.job_id] = job

    async def _read_holds(self, hold_ids: Iterable[str]) -> list[Hold]:
        ids = sorted(hold_ids)
        return await self.reads.holds(ids) if ids else []

    async def _read_jobs(self, job_ids: Iterable[str]) -> list[Job]:
        ids = sorted(job_ids)
        return await self.reads.jobs(ids) if ids else []


def _shallow(value: T) -> T:
    # copy.copy through __reduce_ex__ costs more than the rest of a hold; these are plain
    # dataclasses, so their attributes are their whole state
    clone = object.__new__(type(value))
    clone.__dict__.update(value.__dict__)
    return clone


def copy_account(account: Account) -> Account:
    """A working copy an operation may change freely; the original stays as it was."""
    clone = _shallow(account)
    clone.grants = [_shallow(g) for g in account.grants if g.remaining > 0]
    clone.new_entries, clone.new_events, clone.new_grants = [], [], []
    clone.touched_grants = {}
    return clone


def copy_hold(hold: Hold) -> Hold:
    return replace(hold, funding=list(hold.funding), allocation=list(hold.allocation),
                   metadata=dict(hold.metadata))


def copy_job(job: Job) -> Job:
    return replace(job, params=dict(job.params), input=dict(job.input))


class OperationUnitOfWork:
    """core's UnitOfWork for one operation of a batch: reads see the batch as the operations
    before it left it; changes stay here until `commit` hands them to the batch."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self.saved_events: list[Event] = []
        self.after_commit: list[Callable[[], None]] = []
        self.accounts = _OperationAccounts(self)
        self.holds = _OperationHolds(self)
        self.jobs = _OperationJobs(self)
        self.webhooks = _OperationWebhooks(self)
        self.spends = _OperationSpends(self)
        self.working: dict[str, Account] = {}
        self.created: set[str] = set()
        self.saved = PendingWrites()

    def commit(self) -> None:
        """The operation succeeded: what it saved becomes the batch's state and pending writes."""
        batch, saved = self.batch, self.saved
        for account_id, (account, _) in saved.accounts.items():
            batch.accounts[account_id] = account
            batch.absent.discard(account_id)
            _upsert(batch.writes.accounts, account_id, account, account_id in self.created)
        states: tuple[tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None], ...] = (
            (batch.writes.grants, saved.grants, None),
            (batch.writes.holds, saved.holds, batch.holds),
            (batch.writes.jobs, saved.jobs, batch.jobs))
        for rows, mine, state in states:
            for row_id, (value, new) in mine.items():
                _upsert(rows, row_id, value, new)
                if state is not None:
                    state[row_id] = value
        batch.writes.entries.extend(saved.entries)
        batch.writes.events.extend(saved.events)
        for key, response in saved.webhooks.items():
            batch.webhooks[key] = response
            batch.writes.webhooks[key] = response
        self.saved_events.extend(saved.events)

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
            _upsert(saved.grants, grant.grant_id, grant, True)
        for grant in account.touched_grants.values():
            _upsert(saved.grants, grant.grant_id, grant, False)
        saved.entries.extend(account.new_entries)
        saved.events.extend(account.new_events)
        saved.accounts[account.account_id] = (account, False)
        account.new_entries, account.new_events, account.new_grants = [], [], []
        account.touched_grants = {}
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
        if account_id in uow.working:
            return uow.working[account_id]
        await uow.batch.lock_accounts([account_id])
        current = uow.batch.accounts.get(account_id)
        if current is None:
            return None
        account = uow.working[account_id] = copy_account(current)
        return account

    async def save(self, account: Account) -> None:
        if account.changed or account.touched_grants or account.account_id in self.uow.created:
            self.uow.save_account(account)

    async def with_due_grants(self, now: datetime, limit: int) -> list[str]:
        raise NotImplementedError("the sweeper finds due grants with a read, not in a batch")


class _OperationHolds:
    def __init__(self, uow: OperationUnitOfWork) -> None:
        self.uow = uow

    async def add(self, hold: Hold) -> None:
        _upsert(self.uow.saved.holds, hold.hold_id, hold, True)

    async def get(self, hold_id: str) -> Hold | None:
        mine = self.uow.saved.holds.get(hold_id)
        if mine is not None:
            return copy_hold(mine[0])
        found = await self.uow.batch.hold(hold_id)
        return None if found is None else copy_hold(found)

    async def save(self, hold: Hold, expected_status: str) -> None:
        # the account's lock, held since the hold was read, keeps its status as read
        _upsert(self.uow.saved.holds, hold.hold_id, hold, False)

    async def due(self, now: datetime, limit: int) -> list[str]:
        raise NotImplementedError("the sweeper finds due holds with a read, not in a batch")


class _OperationJobs:
    def __init__(self, uow: OperationUnitOfWork) -> None:
        self.uow = uow

    async def add(self, job: Job) -> None:
        _upsert(self.uow.saved.jobs, job.job_id, job, True)

    async def get(self, job_id: str) -> Job | None:
        mine = self.uow.saved.jobs.get(job_id)
        if mine is not None:
            return copy_job(mine[0])
        found = await self.uow.batch.job(job_id)
        return None if found is None else copy_job(found)

    async def by_task(self, provider: str, task_id: str) -> Job | None:
        for job, _ in self.uow.saved.jobs.values():
            if job.provider == provider and job.provider_task_id == task_id:
                return copy_job(job)
        found = await self.uow.batch.job_by_task(provider, task_id)
        return None if found is None else copy_job(found)

    async def save(self, job: Job, expected_status: str) -> None:
        _upsert(self.uow.saved.jobs, job.job_id, job, False)

    async def due(self, now: datetime, limit: int) -> list[str]:
        raise NotImplementedError("the sweeper finds due jobs with a read, not in a batch")


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
        grants = [_shallow(current[i]) for i in funding_grant_ids(lines, kind) if i in current]
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
