"""Group commit: every mutating operation goes through a `BatchWriter`.

Operations that arrive while a batch is in flight form the next batch; there is no timer, so a
lone operation goes at once. A batch is one transaction (storage/writes/transaction.py); a few
"lanes" split the accounts between them, and each lane keeps up to two batches in flight on
connections of their own: the next one starts as soon as the one before has applied its
operations and waits on the database for its write and commit, so this process's work and
PostgreSQL's overlap instead of taking turns (the lanes' queues and the batches in flight are
storage/writes/lanes.py). After its commit every caller of a batch is answered and its events
are published together, in the order the lane's batches started. A refusal (402, 409, 422, 429
…) is that operation's own result. A batch that fails for any other reason is run again one
operation at a time, so one bad operation never takes its batch-mates down and nothing is
applied twice.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError

import metrics
from core.errors import ConcurrentUpdate
from core.events import Event
from storage.connection_errors import DatabaseUnavailable
from storage.sql import Database
from storage.writes.batch import NOTHING, Touches
from storage.writes.begun import LINGER_S, BegunConnections
from storage.writes.committed_accounts import CommittedAccounts
from storage.writes.hold_owners import HoldOwners
from storage.writes.idempotency import IdempotencyKey, KeyedResult
from storage.writes.lanes import Flight, Lane, first_of, landed, set_within
from storage.writes.operation import OperationUnitOfWork
from storage.writes.transaction import Operation, Outcome, Refusal, run_batch

log = logging.getLogger("creditstream.writer")
T = TypeVar("T")
Publish = Callable[[list[Event]], Awaitable[None]]
ATTEMPTS = 3
RETRY_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected
# batches in flight per lane. Two is what overlaps this process with the database: a third
# never starts under callers that each wait for their answer (they come back only once their
# batch has answered and left its slot; docs/PERFORMANCE.md). An older batch never waits for a
# newer one (a newer one locks after the older locked everything it holds), so the overlap
# adds no deadlock.
DEPTH = 2


class BatchWriter:
    def __init__(
        self,
        db: Database,
        now: Callable[[], datetime],
        publish: Publish,
        lanes: int = 1,
        max_batch: int = 256,
        depth: int = DEPTH,
    ) -> None:
        self.db, self.now, self.publish = db, now, publish
        sqlite = db.dialect == "sqlite"  # one writer at a time
        self.lanes = [Lane() for _ in range(1 if sqlite else max(1, lanes))]
        if not sqlite:
            for lane in self.lanes:
                lane.connections = BegunConnections(db)
        self.depth = 1 if sqlite else max(1, depth)
        self.max_batch = max_batch
        self._tasks: list[asyncio.Task[None]] = []
        self.hold_owners = HoldOwners()
        # PostgreSQL: the accounts its batches committed, so the next batch on them may skip
        # its locking read (SQLite's BEGIN IMMEDIATE locks everything anyway)
        self.remembered = None if sqlite else CommittedAccounts()
        self.commits = 0  # transactions committed, for tests and benchmarks
        self._in_flight = 0

    @property
    def lane_count(self) -> int:
        return len(self.lanes)

    @property
    def connection_count(self) -> int:
        """The most write connections in use at once."""
        return len(self.lanes) * self.depth

    async def run(
        self, action: Callable[[OperationUnitOfWork], Awaitable[T]], touches: Touches = NOTHING
    ) -> T:
        """Run `action` in the next batch and return what it returned (or raise what it raised)."""
        result: T = await self._submit(Operation(action, touches, self._future()))
        return result

    async def run_keyed(
        self,
        action: Callable[[OperationUnitOfWork], Awaitable[tuple[int, Any]]],
        key: IdempotencyKey,
        refusal: Refusal,
        touches: Touches = NOTHING,
    ) -> KeyedResult:
        """Run `action` once per key: a repeat gets the stored answer, also for a refusal."""
        result: KeyedResult = await self._submit(
            Operation(action, touches, self._future(), key, refusal)
        )
        return result

    async def aclose(self) -> None:
        """Finish what is queued and in flight, then stop the lanes (cancelling one mid-batch
        would leave its callers waiting)."""
        while any(lane.queue for lane in self.lanes) or self._in_flight:
            await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for lane in self.lanes:
            if lane.connections is not None:
                await lane.connections.release()

    # -- the loop -----------------------------------------------------------------------------

    def _future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, op: Operation) -> Any:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run_lane(lane), name=f"write-lane-{i}")
                for i, lane in enumerate(self.lanes)
            ]
        op.touches = self.hold_owners.complete(op.touches)
        self._lane_for(op).put([op])
        return await op.future

    def _lane_for(self, op: Operation) -> Lane:
        # an account's operations always share a lane, so batches in flight at the same time
        # touch different accounts and never wait for each other's row locks
        if len(self.lanes) == 1 or not op.touches.accounts:
            return self.lanes[0]
        return self.lanes[hash(op.touches.accounts[0]) % len(self.lanes)]

    async def _run_lane(self, lane: Lane) -> None:
        slots = asyncio.Semaphore(self.depth)
        flying: set[asyncio.Task[None]] = set()
        flights: list[Flight] = []  # in flight, oldest first
        last: Flight | None = None
        try:
            while True:
                if not lane.queue:
                    if flying:  # woken by work arriving or by a batch landing, whichever first
                        await first_of(lane.ready.wait(), flying)
                        continue
                    if lane.connections is not None and lane.connections.kept:
                        # idle: what is kept (a transaction begun on it, or none after a
                        # batch of one statement) goes back unless work comes soon
                        if not await set_within(lane.ready, LINGER_S):
                            await lane.connections.release()
                        continue
                await lane.ready.wait()
                await slots.acquire()
                busy = frozenset().union(*(f.accounts for f in flights)) if flights else None
                in_flight = sum(f.size for f in flights)
                ops = lane.take(lane.share(self.max_batch, self.depth, in_flight), busy)
                if not ops:
                    slots.release()
                    if lane.queue and flying:  # all that waits names the batch in flight
                        await asyncio.wait(flying, return_when=asyncio.FIRST_COMPLETED)
                    continue
                self._in_flight += 1  # counted from the take: aclose waits for what left the queue
                accounts = frozenset(a for op in ops for a in op.touches.accounts)
                flight = Flight(
                    last.answered if last else None, accounts, lane.connections, len(ops)
                )
                last = flight
                flights.append(flight)
                task = asyncio.create_task(self._fly(ops, flight, slots))
                flying.add(task)
                task.add_done_callback(flying.discard)
                task.add_done_callback(functools.partial(landed, flights, flight))
                # the next batch starts once this one waits on the database (or is done)
                await first_of(flight.applied.wait(), {task})
        finally:
            for task in flying:
                task.cancel()

    async def _fly(self, ops: list[Operation], flight: Flight, slots: asyncio.Semaphore) -> None:
        try:
            await self._commit(ops, flight)
        except Exception as exc:  # a lane must outlive any one batch
            log.exception("a write batch failed unexpectedly")
            _fail(ops, exc)
        finally:
            flight.applied.set()
            if not flight.answered.done():
                flight.answered.set_result(None)
            self._in_flight -= 1
            slots.release()

    async def _commit(self, ops: list[Operation], flight: Flight) -> None:
        try:
            outcome = await self._transact(ops, flight)
        except DatabaseUnavailable as exc:
            _fail(ops, exc)
            return
        except (ConcurrentUpdate, DBAPIError) as exc:
            if len(ops) == 1:
                await self._retry_alone(ops[0], exc, flight)
                return
            log.info(
                "a batch of %d failed (%s); running its operations one by one",
                len(ops),
                type(exc).__name__,
            )
            metrics.WRITE_BATCH_SPLITS.inc()
            for op in ops:
                await self._commit([op], flight)
            return
        await self._deliver(outcome, flight)

    async def _retry_alone(self, op: Operation, first: BaseException, flight: Flight) -> None:
        error: BaseException = first
        for _ in range(ATTEMPTS - 1):
            if not _retryable(error):
                break
            try:
                outcome = await self._transact([op], flight)
            except DatabaseUnavailable as exc:
                _fail([op], exc)
                return
            except (ConcurrentUpdate, DBAPIError) as exc:
                error = exc
                continue
            await self._deliver(outcome, flight)
            return
        if _retryable(error):
            error = ConcurrentUpdate("The account changed concurrently; retry the request")
        _fail([op], error)

    async def _transact(self, ops: list[Operation], flight: Flight) -> Outcome:
        try:
            outcome = await run_batch(
                self.db, ops, self.now(), flight.locked, flight.connections, self.remembered
            )
        except BaseException:
            # a lost connection may be a failover to a standby that missed the last commits:
            # nothing remembered is trusted after a batch that failed as a whole
            if self.remembered is not None:
                self.remembered.clear()
            raise
        self.commits += 1
        return outcome

    async def _deliver(self, outcome: Outcome, flight: Flight) -> None:
        """After the commit, once the batch before has answered: publish the batch's events at
        once, then answer every caller."""
        if flight.before is not None:
            await asyncio.shield(flight.before)
        self.hold_owners.learn(outcome.new_holds)
        if outcome.events:
            await self.publish(outcome.events)
        for callback in outcome.after_commit:
            callback()
        for op, value in outcome.results.items():
            if not op.future.done():
                op.future.set_result(value)
        for op, error in outcome.errors.items():
            if not op.future.done():
                op.future.set_exception(error)
        for op in reversed(outcome.deferred):  # first in line for their lane's next batch
            self._lane_for(op).put([op], first=True)


def _retryable(error: BaseException) -> bool:
    if isinstance(error, (ConcurrentUpdate, IntegrityError)):
        return True
    code = getattr(getattr(error, "orig", None), "sqlstate", None) or getattr(
        getattr(error, "orig", None), "pgcode", None
    )
    return isinstance(error, DBAPIError) and code in RETRY_SQLSTATES


def _fail(ops: list[Operation], error: BaseException) -> None:
    for op in ops:
        if not op.future.done():
            op.future.set_exception(error)
