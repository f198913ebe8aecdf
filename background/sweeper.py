"""The sweeper: releases holds past their TTL, expires grants past `expires_at`, and prunes what
outlives its retention — stream events past the journal's window and old idempotency keys — in
bounded batches (storage/retention.py). Every instance runs one; the engine's locks and status
guards make concurrent sweepers safe (each hold is released once)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

import metrics
from background.supervision import Backoff, Heartbeat
from core.errors import ConcurrentUpdate
from core.events import Event
from core.job_service import JobService
from core.service import CreditService
from storage import due
from storage.retention import EventRetention, PruneResult, in_batches
from storage.sql import Database
from storage.writes.batch import Touches
from storage.writes.idempotency import IdempotencyStore
from storage.writes.operation import OperationUnitOfWork
from storage.writes.writer import BatchWriter

log = logging.getLogger("creditstream.sweeper")
PASS_LIMIT = 500  # of each kind per pass; a full pass is followed by the next one at once
KEY_RETENTION = timedelta(hours=48)
EVENTS_RETENTION = timedelta(days=7)  # CREDITSTREAM_EVENTS_RETENTION_DAYS
PRUNE_EVERY = 60  # passes between prunes (a minute at the default interval) unless one has more
FAILURE_BACKOFF_CAP_S = 30.0
STUCK_S = 300.0  # one pass: a few batches of at most PASS_LIMIT each, bounded by the db's timeouts

Publish = Callable[[list[Event]], Awaitable[None]]
Expiry = Callable[[OperationUnitOfWork], Awaitable[int | bool]]


@dataclass
class SweepReport:
    holds_expired: int = 0
    grants_expired: int = 0
    jobs_timed_out: int = 0
    keys_purged: int = 0
    events_pruned: int = 0
    more_due: bool = False  # a kind filled its pass and made progress: sweep again at once


class Sweeper:
    def __init__(
        self,
        db: Database,
        service: CreditService,
        idempotency: IdempotencyStore,
        publish: Publish | None = None,
        jobs: JobService | None = None,
        writer: BatchWriter | None = None,
        pass_limit: int = PASS_LIMIT,
        events_retention: EventRetention | None = None,
    ) -> None:
        self.db, self.service, self.idempotency = db, service, idempotency
        self.events_retention = events_retention or EventRetention(db, EVENTS_RETENTION)
        self._prune_due = True  # the first pass prunes; then every PRUNE_EVERY, or at once
        self.jobs = jobs or JobService(service)
        self.writer = writer or BatchWriter(db, service.now, publish or _nowhere, lanes=1)
        self.pass_limit = pass_limit
        self.runs = 0
        self.heartbeat = Heartbeat("sweeper", STUCK_S)

    async def run_once(self) -> SweepReport:
        """One pass. Everything found due is submitted to the writer at once, each expiry on its
        account's lane, so the batcher groups them into a few transactions (one each, awaited in
        turn, could not keep up with a busy instance's holds)."""
        report = SweepReport()
        due_jobs = await due.jobs_due(self.db, self.service.now(), self.pass_limit)
        self._record_lateness("job", due_jobs)
        # before holds: a job's timeout releases its own hold
        report.jobs_timed_out = await self._expire_all(
            (
                self._job_expiry(d.id),
                Touches(accounts=(d.account_id,), holds=_ids(d.hold_id), jobs=(d.id,)),
            )
            for d in due_jobs
        )
        due_holds = await due.holds_due(self.db, self.service.now(), self.pass_limit)
        self._record_lateness("hold", due_holds)
        report.holds_expired = await self._expire_all(
            (self._hold_expiry(d.id), Touches(accounts=(d.account_id,), holds=(d.id,)))
            for d in due_holds
        )
        account_ids = await due.accounts_with_due_grants(
            self.db, self.service.now(), self.pass_limit
        )
        report.grants_expired = await self._expire_all(
            (self._grant_expiry(a), Touches(accounts=(a,))) for a in account_ids
        )
        report.more_due = any(
            len(found) >= self.pass_limit and done > 0
            for found, done in (
                (due_jobs, report.jobs_timed_out),
                (due_holds, report.holds_expired),
                (account_ids, report.grants_expired),
            )
        )
        if self._prune_due or self.runs % PRUNE_EVERY == 0:
            await self._prune(report)
        self.runs += 1
        return report

    async def _prune(self, report: SweepReport) -> None:
        """One bounded round of retention: a table with more due than a pass takes is pruned
        again on the next pass rather than in one long transaction now."""
        now = self.service.now()
        events = await self.events_retention.prune(now)
        keys_before = now - KEY_RETENTION
        keys: PruneResult = await in_batches(
            lambda limit: self.idempotency.purge(keys_before, limit)
        )
        report.events_pruned, report.keys_purged = events.deleted, keys.deleted
        self._prune_due = events.more or keys.more

    async def run_forever(self, interval_s: float, stopping: asyncio.Event) -> None:
        """Sweep until `stopping` is set; a pass in progress finishes first, so shutdown never
        cancels a transaction halfway (asyncpg connections cancelled mid-query can hang).
        A pass that found more than it may take is followed by the next at once, without
        waiting for the tick. A failed pass (the database down) is logged, counted and retried
        after a backoff."""
        backoff = Backoff(interval_s, max(interval_s, FAILURE_BACKOFF_CAP_S))
        while not stopping.is_set():
            wait = interval_s
            self.heartbeat.beat()
            try:
                report = await self.run_once()
                self.heartbeat.succeeded()
                backoff.reset()
                metrics.SWEEPS.labels("ok").inc()
                for kind, count in report.__dict__.items():
                    if count and kind != "more_due":
                        metrics.SWEPT.labels(kind).inc(count)
                if any(count for kind, count in report.__dict__.items() if kind != "more_due"):
                    log.info("sweep", extra=dict(report.__dict__))
                if report.more_due:
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.SWEEPS.labels("failed").inc()
                self.heartbeat.failed(exc, "a sweep")
                wait = backoff.next_delay()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), wait)

    def _record_lateness(self, kind: str, found: list[due.Due]) -> None:
        """How late the oldest due one is (found oldest first): 0 when none is due."""
        late = (self.service.now() - found[0].expires_at).total_seconds() if found else 0.0
        metrics.SWEEPER_OLDEST_DUE.labels(kind).set(max(0.0, late))

    def _job_expiry(self, job_id: str) -> Expiry:
        return lambda uow: self.jobs.expire(uow, job_id)

    def _hold_expiry(self, hold_id: str) -> Expiry:
        return lambda uow: self.service.expire_hold(uow, hold_id)

    def _grant_expiry(self, account_id: str) -> Expiry:
        return lambda uow: self.service.expire_grants(uow, account_id)

    async def _expire_all(self, expiries: Iterable[tuple[Expiry, Touches]]) -> int:
        """Submit every expiry before awaiting any. One that another sweeper or a capture got to
        first counts 0 (ConcurrentUpdate, or False from the use case's status guard); any other
        error fails the pass once all the others have been applied."""
        results = await asyncio.gather(
            *(self.writer.run(expiry, touches) for expiry, touches in expiries),
            return_exceptions=True,
        )
        errors = [
            r
            for r in results
            if isinstance(r, BaseException) and not isinstance(r, ConcurrentUpdate)
        ]
        if errors:
            raise errors[0]
        return sum(int(r) for r in results if not isinstance(r, BaseException))


def _ids(one: str | None) -> tuple[str, ...]:
    return () if one is None else (one,)


async def _nowhere(events: list[Event]) -> None:
    """Where a sweeper without a publisher sends its events: the journal has them."""
