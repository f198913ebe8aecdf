"""Group commit: every mutating operation goes through a `BatchWriter`.

Operations that arrive while a batch is in flight form the next batch; there is no timer, so a
lone operation goes at once. A batch is one transaction on one of a few write connections (its
"lane"): keys claimed, accounts locked in id order, core's use cases applied in arrival order,
rows written set-based, one commit; then every caller is answered and the batch's events are
published together. A refusal (402, 409, 422, 429 …) is that operation's own result. A batch that
fails for any other reason is run again one operation at a time, so one bad operation never
takes its batch-mates down and nothing is applied twice.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError

import metrics
from core.errors import ConcurrentUpdate, IdempotencyKeyReused, RequestInProgress
from core.events import Event
from storage.sql import Database, DatabaseUnavailable
from storage.writes import idempotency
from storage.writes.batch import NOTHING, Batch, Touches
from storage.writes.batch_session import DATABASE_ERRORS, BatchSession, batch_session
from storage.writes.idempotency import IdempotencyKey, KeyId
from storage.writes.operation import OperationUnitOfWork

log = logging.getLogger("creditstream.writer")
T = TypeVar("T")
Action = Callable[[OperationUnitOfWork], Awaitable[Any]]
Refusal = Callable[[Exception], tuple[int, Any] | None]
Publish = Callable[[list[Event]], Awaitable[None]]
ATTEMPTS = 3
RETRY_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected
# errors that put the transaction itself in doubt: the whole batch goes again
IN_DOUBT: tuple[type[BaseException], ...] = (ConcurrentUpdate, *DATABASE_ERRORS)


@dataclass(frozen=True)
class KeyedResult:
    """What a keyed operation answers: its own result, or the first request's, replayed."""

    status: int
    body: Any
    replayed: bool = False


@dataclass(eq=False)
class Operation:
    action: Action
    touches: Touches
    future: asyncio.Future[Any]
    key: IdempotencyKey | None = None
    refusal: Refusal | None = None  # how a refused keyed operation's answer is stored


@dataclass
class Outcome:
    """How one batch went: each operation's result or error, and who must wait for the next."""

    results: dict[Operation, Any] = field(default_factory=dict)
    errors: dict[Operation, BaseException] = field(default_factory=dict)
    committed: list[OperationUnitOfWork] = field(default_factory=list)
    deferred: list[Operation] = field(default_factory=list)


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
    def __init__(self, db: Database, now: Callable[[], datetime], publish: Publish,
                 lanes: int = 1, max_batch: int = 256) -> None:
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

    async def run(self, action: Callable[[OperationUnitOfWork], Awaitable[T]],
                  touches: Touches = NOTHING) -> T:
        """Run `action` in the next batch and return what it returned (or raise what it raised)."""
        result: T = await self._submit(Operation(action, touches, self._future()))
        return result

    async def run_keyed(self, action: Callable[[OperationUnitOfWork], Awaitable[tuple[int, Any]]],
                        key: IdempotencyKey, refusal: Refusal,
                        touches: Touches = NOTHING) -> KeyedResult:
        """Run `action` once per key: a repeat gets the stored answer, also for a refusal."""
        result: KeyedResult = await self._submit(
            Operation(action, touches, self._future(), key, refusal))
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
            self._tasks = [asyncio.create_task(self._run_lane(lane), name=f"write-lane-{i}")
                           for i, lane in enumerate(self.lanes)]
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
            outcome = await self._attempt(ops)
        except DatabaseUnavailable as exc:
            _fail(ops, exc)
            return
        except (ConcurrentUpdate, DBAPIError) as exc:
            if len(ops) == 1:
                await self._retry_alone(ops[0], exc)
                return
            log.info("a batch of %d failed (%s); running its operations one by one",
                     len(ops), type(exc).__name__)
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
                outcome = await self._attempt([op])
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

    async def _deliver(self, outcome: Outcome) -> None:
        """After the commit: publish the batch's events at once, then answer every caller."""
        events = [event for uow in outcome.committed for event in uow.saved_events]
        if events:
            await self.publish(events)
        for uow in outcome.committed:
            for callback in uow.after_commit:
                callback()
        for op, value in outcome.results.items():
            if not op.future.done():
                op.future.set_result(value)
        for op, error in outcome.errors.items():
            if not op.future.done():
                op.future.set_exception(error)
        for op in reversed(outcome.deferred):  # first in line for their lane's next batch
            self._lane_for(op).put([op], first=True)

    # -- one transaction ----------------------------------------------------------------------

    async def _attempt(self, ops: list[Operation]) -> Outcome:
        now = self.now()
        outcome = Outcome()
        metrics.WRITE_BATCH_SIZE.observe(len(ops))
        async with batch_session(self.db) as session:
            batch = Batch(session)
            runnable = await self._claim(session, ops, now, outcome)
            await batch.load(op.touches for op in runnable)
            responses: dict[KeyId, tuple[int, Any]] = {}
            failed: list[KeyId] = []
            for op in runnable:
                await self._apply(batch, op, outcome, responses, failed)
            if responses:
                await session.record(responses)
            await session.flush(batch.writes, now)
            if failed:
                await session.unclaim(failed)
        self.commits += 1
        return outcome

    async def _claim(self, session: BatchSession, ops: list[Operation], now: datetime,
                     outcome: Outcome) -> list[Operation]:
        """Claim the batch's keys; answer replays and mismatches; return what must run."""
        claims = await idempotency.claim(session, (op.key for op in ops if op.key), now)
        runnable: list[Operation] = []
        owners: set[KeyId] = set()
        for op in ops:
            if op.key is None:
                runnable.append(op)
                continue
            if op.key.id in owners:  # the same key twice in one batch: the second replays next
                outcome.deferred.append(op)
                continue
            owners.add(op.key.id)
            stored = claims[op.key.id]
            if stored is None:
                runnable.append(op)
            elif stored.fingerprint != op.key.fingerprint:
                outcome.errors[op] = IdempotencyKeyReused(
                    "This Idempotency-Key was used with a different request; use a new key "
                    "for a new request")
            elif stored.status is None:
                outcome.errors[op] = RequestInProgress(
                    "A request with this Idempotency-Key is still running; retry later")
            else:
                metrics.IDEMPOTENT_REPLAYS.inc()
                outcome.results[op] = KeyedResult(stored.status, stored.body, replayed=True)
        return runnable

    async def _apply(self, batch: Batch, op: Operation, outcome: Outcome,
                     responses: dict[KeyId, tuple[int, Any]], failed: list[KeyId]) -> None:
        uow = OperationUnitOfWork(batch)
        try:
            value = await op.action(uow)
        except IN_DOUBT:
            raise  # the transaction itself is in doubt: the whole batch goes again
        except Exception as exc:
            stored = op.refusal(exc) if op.key and op.refusal else None
            if op.key and stored is not None:
                responses[op.key.id] = stored  # a refusal is a result: the key replays it
            elif op.key:
                failed.append(op.key.id)
            outcome.errors[op] = exc
            return
        uow.commit()
        outcome.committed.append(uow)
        if op.key is None:
            outcome.results[op] = value
            return
        status, body = value
        responses[op.key.id] = (status, body)
        outcome.results[op] = KeyedResult(status, body)


def _retryable(error: BaseException) -> bool:
    if isinstance(error, (ConcurrentUpdate, IntegrityError)):
        return True
    code = getattr(getattr(error, "orig", None), "sqlstate", None) or getattr(
        getattr(error, "orig", None), "pgcode", None)
    return isinstance(error, DBAPIError) and code in RETRY_SQLSTATES


def _fail(ops: list[Operation], error: BaseException) -> None:
    for op in ops:
        if not op.future.done():
            op.future.set_exception(error)
