"""In-memory stand-ins for the ports, so the use cases and the hub run without a database,
Redis or a network (cosmicpython's fake unit of work)."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from background.supervision import Heartbeat
from core.account import Account
from core.errors import ConcurrentUpdate
from core.events import Event
from core.jobs import Job
from core.model import Entry, Hold
from realtime.broker import OnMessage, OnResync
from tests.support import MutableClock

Row = TypeVar("Row", Account, Hold, Job)


def _copy(row: Row) -> Row:
    return copy.deepcopy(row)


@dataclass
class MemoryDatabase:
    """What is committed: a transaction's changes land here only when it ends without error."""

    accounts: dict[str, Account] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryUnitOfWork]:
        uow = MemoryUnitOfWork(self)
        yield uow  # an error skips the commit: nothing the transaction saved is kept
        uow.commit()


class MemoryUnitOfWork:
    """core's UnitOfWork: reads see the committed state plus what this transaction saved."""

    def __init__(self, db: MemoryDatabase) -> None:
        self.db = db
        self.saved = MemoryDatabase()
        self.accounts = MemoryAccounts(self)
        self.holds = MemoryHolds(self)
        self.jobs = MemoryJobs(self)

    def commit(self) -> None:
        self.db.accounts.update(self.saved.accounts)
        self.db.holds.update(self.saved.holds)
        self.db.jobs.update(self.saved.jobs)
        self.db.entries.extend(self.saved.entries)
        self.db.events.extend(self.saved.events)

    def current(self, table: str, row_id: str) -> Any:
        saved: dict[str, Any] = getattr(self.saved, table)
        committed: dict[str, Any] = getattr(self.db, table)
        return saved.get(row_id, committed.get(row_id))

    def rows(self, table: str) -> list[Any]:
        return list({**getattr(self.db, table), **getattr(self.saved, table)}.values())


class MemoryAccounts:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self.uow = uow

    async def insert_new(self, account: Account) -> bool:
        if self.uow.current("accounts", account.account_id) is not None:
            return False
        await self.save(account)
        return True

    async def get(self, account_id: str) -> Account | None:
        account = await self.lock(account_id)
        if account is not None:
            account.grants = []
        return account

    async def lock(self, account_id: str) -> Account | None:
        found: Account | None = self.uow.current("accounts", account_id)
        if found is None:
            return None
        account = _copy(found)
        account.grants = [g for g in account.grants if g.remaining > 0]
        account.loaded_seq = account.seq
        return account

    async def save(self, account: Account) -> None:
        if not account.changed and not account.touched_grants:
            return
        stored: Account | None = self.uow.current("accounts", account.account_id)
        if stored is not None and stored.seq != account.loaded_seq:
            raise ConcurrentUpdate(
                f"Expected {account.account_id} at seq {account.loaded_seq}, found {stored.seq}"
            )
        self.uow.saved.entries.extend(account.new_entries)
        self.uow.saved.events.extend(account.new_events)
        account.new_entries, account.new_events, account.new_grants = [], [], []
        account.touched_grants = {}
        account.loaded_seq = account.seq
        self.uow.saved.accounts[account.account_id] = _copy(account)

    async def with_due_grants(self, now: datetime, limit: int) -> list[str]:
        due = [
            a.account_id for a in self.uow.rows("accounts") if any(g.is_due(now) for g in a.grants)
        ]
        return sorted(due)[:limit]


class MemoryHolds:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self.uow = uow

    async def add(self, hold: Hold) -> None:
        self.uow.saved.holds[hold.hold_id] = _copy(hold)

    async def get(self, hold_id: str) -> Hold | None:
        found: Hold | None = self.uow.current("holds", hold_id)
        return None if found is None else _copy(found)

    async def save(self, hold: Hold, expected_status: str) -> None:
        stored: Hold = self.uow.current("holds", hold.hold_id)
        if stored.status != expected_status:
            raise ConcurrentUpdate(
                f"Expected hold {hold.hold_id} {expected_status}, found {stored.status}"
            )
        self.uow.saved.holds[hold.hold_id] = _copy(hold)

    async def due(self, now: datetime, limit: int) -> list[str]:
        return sorted(h.hold_id for h in self.uow.rows("holds") if h.is_due(now))[:limit]


class MemoryJobs:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self.uow = uow

    async def add(self, job: Job) -> None:
        self.uow.saved.jobs[job.job_id] = _copy(job)

    async def get(self, job_id: str) -> Job | None:
        found: Job | None = self.uow.current("jobs", job_id)
        return None if found is None else _copy(found)

    async def by_task(self, provider: str, task_id: str) -> Job | None:
        return next(
            (
                _copy(j)
                for j in self.uow.rows("jobs")
                if (j.provider, j.provider_task_id) == (provider, task_id)
            ),
            None,
        )

    async def save(self, job: Job, expected_status: str) -> None:
        stored: Job = self.uow.current("jobs", job.job_id)
        if stored.status != expected_status:
            raise ConcurrentUpdate(
                f"Expected job {job.job_id} {expected_status}, found {stored.status}"
            )
        self.uow.saved.jobs[job.job_id] = _copy(job)

    async def due(self, now: datetime, limit: int) -> list[str]:
        return sorted(j.job_id for j in self.uow.rows("jobs") if j.is_due(now))[:limit]


# -- push -----------------------------------------------------------------------------------


class MemoryJournal:
    """The hub's EventJournal over a list per account; `failing` makes every read raise."""

    def __init__(self) -> None:
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.appended_at: dict[str, datetime] = {}
        self.clock = MutableClock()
        self.failing: Exception | None = None
        self.snapshot_reads: list[list[str]] = []  # the accounts of each `snapshots` call
        self.pruned: set[tuple[str, int]] = set()  # (account, seq) deleted past the retention

    def append(self, account_id: str, count: int = 1) -> list[dict[str, Any]]:
        """Commit `count` more events to the account's journal; returns them."""
        stream = self.events.setdefault(account_id, [])
        added = [
            {"type": "balance.updated", "account_id": account_id, "seq": len(stream) + i}
            for i in range(1, count + 1)
        ]
        stream.extend(added)
        self.appended_at[account_id] = self.clock.now()
        return added

    def now(self) -> datetime:
        return self.clock.now()

    async def moved_since(self, since: datetime) -> dict[str, int]:
        self._check()
        return {a: len(self.events[a]) for a, at in self.appended_at.items() if at >= since}

    async def events_after(
        self, account_id: str, after_seq: int, limit: int
    ) -> list[dict[str, Any]]:
        self._check()
        return [
            e
            for e in self.events.get(account_id, [])
            if e["seq"] > after_seq and (account_id, e["seq"]) not in self.pruned
        ][:limit]

    async def heads(self, account_ids: list[str]) -> dict[str, int]:
        self._check()
        return {a: len(self.events[a]) for a in account_ids if self.events.get(a)}

    async def snapshots(self, account_ids: list[str]) -> dict[str, dict[str, Any]]:
        self._check()
        self.snapshot_reads.append(list(account_ids))
        return {
            a: {"account_id": a, "seq": len(self.events[a])}
            for a in account_ids
            if self.events.get(a)
        }

    def _check(self) -> None:
        if self.failing is not None:
            raise self.failing


class MemoryBroker:
    """A broker that keeps what it was asked: subscriptions and published messages."""

    def __init__(self) -> None:
        self.state = "connected"
        self.reconnects = 0
        self.heartbeats: list[Heartbeat] = []
        self.subscribed: set[str] = set()
        self.published: list[tuple[str, str]] = []

    async def start(self, on_message: OnMessage, on_resync: OnResync) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def subscribe(self, account_id: str) -> None:
        self.subscribed.add(account_id)

    async def unsubscribe(self, account_id: str) -> None:
        self.subscribed.discard(account_id)

    def publish(self, account_id: str, payload: str) -> None:
        self.published.append((account_id, payload))

    async def ping(self) -> None:
        return None


class ListSink:
    """A connection's outgoing side that keeps every message (or refuses once full)."""

    def __init__(self, room: int = 10_000) -> None:
        self.messages: list[str] = []
        self.room = room

    def offer(self, text: str) -> bool:
        if len(self.messages) >= self.room:
            return False
        self.messages.append(text)
        return True

    async def wait_for_room(self, count: int, timeout_s: float) -> None:
        return None
