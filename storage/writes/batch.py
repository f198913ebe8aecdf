"""One group-commit transaction, in memory.

The accounts a batch touches are locked in one statement, in id order, and loaded with their live
grants; the holds and jobs it names are read in bulk once their accounts are locked. Each
operation then runs core's use cases against that state through its own unit of work
(storage/writes/operation.py), whose saved changes join the batch's pending writes only when it
succeeds. Anything not loaded up front is read on demand, so every use case runs unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from core.account import Account
from core.events import Event
from core.jobs import Job
from core.model import Entry, Grant, Hold
from storage.dialects import storable_key

T = TypeVar("T")


@dataclass(frozen=True)
class Touches:
    """What an operation will touch, so a batch can load it in bulk before any operation runs.
    Only a hint: whatever is missing is loaded when the operation asks for it."""

    accounts: tuple[str, ...] = ()
    holds: tuple[str, ...] = ()
    jobs: tuple[str, ...] = ()

    @property
    def said(self) -> bool:
        """Whether the operation said what it touches, so the batch locks it before it runs."""
        return bool(self.accounts or self.holds or self.jobs)


NOTHING = Touches()


@dataclass(slots=True)  # one per operation: slots make it cheaper to build
class PendingWrites:
    """Everything the batch's successful operations saved, latest state per row."""

    accounts: dict[str, tuple[Account, bool]] = field(default_factory=dict)  # (state, is new)
    grants: dict[str, tuple[Grant, bool]] = field(default_factory=dict)
    holds: dict[str, tuple[Hold, bool]] = field(default_factory=dict)
    jobs: dict[str, tuple[Job, bool]] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    webhooks: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def upsert_row(rows: dict[str, tuple[Any, bool]], row_id: str, value: Any, new: bool) -> None:
    """Keep the latest state of a row; a row inserted earlier in the batch stays an insert."""
    known = rows.get(row_id)
    rows[row_id] = (value, new or (known is not None and known[1]))


@dataclass(frozen=True)
class Savepoint:
    """A batch's state at one moment. Operations change copies, never the objects the batch
    holds, so copies of its maps and lists are enough to go back to it."""

    accounts: dict[str, Account]
    absent: set[str]
    holds: dict[str, Hold]
    jobs: dict[str, Job]
    webhooks: dict[tuple[str, str], dict[str, Any] | None]
    spends: dict[tuple[str, str], tuple[list[Entry], list[Grant]]]
    writes: PendingWrites


class BatchReads(Protocol):
    """What a batch reads inside its transaction (storage/writes/batch_session.py implements it)."""

    async def lock_accounts(
        self, account_ids: Sequence[str], hold_ids: Sequence[str] = (), job_ids: Sequence[str] = ()
    ) -> list[Account]:
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

    def adopt(self, accounts: dict[str, Account], holds: dict[str, Hold]) -> None:
        """Accounts, and holds of theirs, as this process last committed them, in place of the
        locking read: the batch's write locks the accounts and checks they are still so, which
        vouches for the holds too (committed_accounts.py)."""
        self.accounts.update(accounts)
        self.holds.update(holds)

    async def lock_accounts(
        self, account_ids: Iterable[str], hold_ids: Sequence[str] = (), job_ids: Sequence[str] = ()
    ) -> None:
        wanted = sorted(
            {
                a
                for a in account_ids
                if a not in self.accounts and a not in self.absent and storable_key(a)
            }
        )
        if not (wanted or hold_ids or job_ids):
            return
        found = {
            a.account_id: a
            for a in await self.reads.lock_accounts(wanted, hold_ids, job_ids)
            if a.account_id not in self.accounts
        }
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

    def savepoint(self) -> Savepoint:
        """The state to go back to if what runs next must leave nothing behind, as a whole."""
        w = self.writes
        return Savepoint(
            dict(self.accounts),
            set(self.absent),
            dict(self.holds),
            dict(self.jobs),
            dict(self.webhooks),
            dict(self.spends),
            PendingWrites(
                dict(w.accounts),
                dict(w.grants),
                dict(w.holds),
                dict(w.jobs),
                list(w.entries),
                list(w.events),
                dict(w.webhooks),
            ),
        )

    def roll_back(self, point: Savepoint) -> None:
        """Back to `point`: what ran since is neither state nor pending write any more (the rows
        it locked stay locked until the commit, which is harmless)."""
        self.accounts, self.absent = dict(point.accounts), set(point.absent)
        self.holds, self.jobs = dict(point.holds), dict(point.jobs)
        self.webhooks, self.spends = dict(point.webhooks), dict(point.spends)
        w = point.writes
        self.writes = PendingWrites(
            dict(w.accounts),
            dict(w.grants),
            dict(w.holds),
            dict(w.jobs),
            list(w.entries),
            list(w.events),
            dict(w.webhooks),
        )

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


def shallow_copy(value: T) -> T:
    # copy.copy through __reduce_ex__ costs more than the rest of a hold; these are plain
    # dataclasses, so their attributes are their whole state
    clone = object.__new__(type(value))
    clone.__dict__.update(value.__dict__)
    return clone


def copy_account(account: Account) -> Account:
    """A working copy an operation may change freely; the original stays as it was. Its grants
    are copied when it changes them (core.grants), not here: a part of a batch touches one or
    two of an account's grants, whatever their number."""
    return account.working_copy()


def copy_hold(hold: Hold) -> Hold:
    clone = shallow_copy(hold)  # dataclasses.replace walks every field through __init__
    clone.funding, clone.allocation = list(hold.funding), list(hold.allocation)
    clone.metadata = dict(hold.metadata)
    return clone


def copy_job(job: Job) -> Job:
    return replace(job, params=dict(job.params), input=dict(job.input))
