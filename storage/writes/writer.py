"""Group commit: every mutating operation goes through a `BatchWriter`.

Operations that arrive while a batch is in flight form the next batch; there is no timer, so a
lone operation goes at once. A batch is one transaction (storage/writes/transaction.py) on one of a
few write connections, its "lane"; after its commit every caller is answered and the batch's
events are published together. A refusal (402, 409, 422, 429 …) is that operation's own result. A batch that
fails for any other reason is run again one operation at a time, so one bad operation never
takes its batch-mates down and nothing is applied twice.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError

import metrics
from core.errors import ConcurrentUpdate
from core.events import Event
from storage.connection_errors import DatabaseUnavailable
from storage.sql import Database
from storage.writes.batch import NOTHING, Touches
from storage.writes.idempotency import IdempotencyKey, KeyedResult
from storage.writes.operation import OperationUnitOfWork
from storage.writes.transaction import Operation, Outcome, Refusal, run_batch

log = logging.getLogger("creditstream.writer")
T = TypeVar("T")
Publish = Callable[[list[Event]], Awaitable[None]]
ATTEMPTS = 3
RETRY_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected


class _Lane:
    """One write connection's queue: what arrives while its batch is in flight is its next."""

    def __init__(self) -> None:
        self.queue: collections.deque[Operation] = collections.deque()
        self.ready = asyncio.Event()

    def put(self, ops: Iterable[Operation], first: bool = False) -> None:
        if first:
            self.queue.extendleft(reversed(list(ops)))
        else:
            self.queue.extend(ops)
        self.ready.set()

    def take(self, most: int) -> list[Operation]:
        ops: list[Operation] = []
        while self.queue and len(ops) < most:
            op = self.queue.popleft()
            if not op.future.done():  # its caller went away before it ran
                ops.append(op)
        if not self.queue:
            self.ready.clear()
        return ops


class BatchWriter:
    def __init__(
        self,
        db: Database,
        now: Callable[[], datetime],
        publish: Publish,
        lanes: int = 1,
        max_batch: int = 256,
    ) -> None:
        self.db, self.now, self.publish = db, now, publish
        count = 1 if db.dialect == "sqlite" else max(1, lanes)  # SQLite: one writer at a time
        self.lanes = [_Lane() for _ in range(count)]
        self.max_batch = max_batch
        self._tasks: list[asyncio.Task[None]] = []
        self.commits = 0  # transactions committed, for tests and benchmarks
        self._in_flight = 0

    @property
    def lane_count(self) -> int:
        return len(self.lanes)

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

    # -- the loop -----------------------------------------------------------------------------

    def _future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, op: Operation) -> Any:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run_lane(lane), name=f"write-lane-{i}")
                for i, lane in enumerate(self.lanes)
            ]
        self._lane_for(op).put([op])
        return await op.future

    def _lane_for(self, op: Operation) -> _Lane:
        # an account's operations always share a lane, so batches in flight at the same time
        # touch different accounts and never wait for each other's row locks
        if len(self.lanes) == 1 or not op.touches.accounts:
            return self.lanes[0]
        return self.lanes[hash(op.touches.accounts[0]) % len(self.lanes)]

    async def _run_lane(self, lane: _Lane) -> None:
        while True:
            await lane.ready.wait()
            ops = lane.take(self.max_batch)
            if not ops:
                continue
            self._in_flight += 1
            try:
                await self._commit(ops)
            except Exception as exc:  # a lane must outlive any one batch
                log.exception("a write batch failed unexpectedly")
                _fail(ops, exc)
            finally:
                self._in_flight -= 1

    async def _commit(self, ops: list[Operation]) -> None:
        try:
            outcome = await self._transact(ops)
        except DatabaseUnavailable as exc:
            _fail(ops, exc)
            return
        except (ConcurrentUpdate, DBAPIError) as exc:
            if len(ops) == 1:
                await self._retry_alone(ops[0], exc)
                return
            log.info(
                "a batch of %d failed (%s); running its operations one by one",
                len(ops),
                type(exc).__name__,
            )
            metrics.WRITE_BATCH_SPLITS.inc()
            for op in ops:
                await self._commit([op])
            return
        await self._deliver(outcome)

    async def _retry_alone(self, op: Operation, first: BaseException) -> None:
        error: BaseException = first
        for _ in range(ATTEMPTS - 1):
            if not _retryable(error):
                break
            try:
                outcome = await self._transact([op])
            except DatabaseUnavailable as exc:
                _fail([op], exc)
                return
            except (ConcurrentUpdate, DBAPIError) as exc:
                error = exc
                continue
            await self._deliver(outcome)
            return
        if _retryable(error):
            error = ConcurrentUpdate("The account changed concurrently; retry the request")
        _fail([op], error)

    async def _transact(self, ops: list[Operation]) -> Outcome:
        outcome = await run_batch(self.db, ops, self.now())
        self.commits += 1
        return outcome

    async def _deliver(self, outcome: Outcome) -> None:
        """After the commit: publish the batch's events at once, then answer every caller."""
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
